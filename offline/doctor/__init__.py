"""``deepseek-doctor``: check an isolated host against the bundle it was installed from.

A check is a small function registered with an id, a group and a severity (see ``checks/``); the
runner adds parallelism, per-check timeouts and crash isolation; ``report`` renders text, JSON
(versioned schema in ``schema``), self-contained HTML and JUnit XML. The core groups use the
standard library only, so a host with a broken torch still gets its report.

    offline.doctor.runner.diagnose(context, only=..., skip=...) -> Report
"""
