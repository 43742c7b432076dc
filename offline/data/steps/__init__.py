"""Cleaning steps, one interface (:mod:`~offline.data.steps.base`).

A module here that defines ``STEPS`` (a tuple of :class:`~offline.data.steps.base.StepSpec`)
adds its steps to the chain: :func:`~offline.data.steps.registry.registry` finds them, and the
``clean`` section of ``params.yaml`` gets one section per step from it. A new step is one file.
"""
