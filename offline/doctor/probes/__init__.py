"""Programs the doctor runs under the interpreter it checks, as files: ``python -P FILE ARGS``.

Each is a script of the standard library only (the checked env may lack the toolkit, or have a
broken torch), imports a framework only inside the function that asks about it, and prints its
answer on stdout; the check that runs it parses that answer. Nothing here is imported by the
doctor except for a constant or two.

- ``frameworks.py``: ``probe BODY MODULE DIST`` imports one framework and prints a marked JSON
  record; ``host IDLE`` imports torch once and forks ``probe`` children on request.
- ``torch_build.py``: what the installed torch was built for (CUDA, NCCL, GPU architectures).
- ``python_env.py``: an interpreter's version, prefixes and installed distributions.
"""
