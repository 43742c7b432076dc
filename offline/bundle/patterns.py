"""Which files of a model directory a bundle takes: ``include`` and ``exclude`` glob patterns.

A pattern is a relative POSIX path, matched segment by segment against a file's path inside the
model directory (segments are what lies between the ``/``):

- ``*``, ``?`` and ``[seq]`` work as in :func:`fnmatch.fnmatchcase` (case-sensitive) within one
  segment; they never match a ``/``.
- ``**`` as a whole segment matches any number of segments, none included.
- A pattern with no ``/`` except a trailing one matches at any depth: ``*.bin`` means
  ``**/*.bin``, as in ``.gitignore``.
- A pattern matches a file when it matches the file's path or the path of one of its parent
  directories, so ``original`` and ``original/**`` both match everything under ``original/``.
  A trailing ``/`` makes a pattern match directories only.

A file is taken when an include pattern matches it (no include patterns: every file) and no
exclude pattern does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Pattern:
    text: str  # as the spec wrote it
    segments: tuple[str, ...]
    directories_only: bool

    def matches(self, path: str) -> bool:
        """Whether the pattern matches ``path`` (``a/b/c.bin``) or one of its directories."""
        parts = path.split("/")
        last = len(parts) - 1 if self.directories_only else len(parts)
        return any(_match(self.segments, tuple(parts[:n])) for n in range(1, last + 1))


@dataclass(frozen=True)
class Selection:
    taken: tuple[str, ...]
    left_out: tuple[str, ...]
    unmatched: tuple[str, ...]  # "include 'x'" / "exclude 'y'": patterns that match no file


def pattern_problem(text: str) -> str | None:
    """Why ``text`` is not a pattern, or None when it is one."""
    body = text[:-1] if text.endswith("/") else text
    if not body.strip():
        return f"{text!r} is empty"
    if "\\" in text:
        return f"{text!r} holds a backslash; separate directories with '/'"
    if text.startswith("/"):
        return f"{text!r} is absolute; patterns are relative to the model directory"
    segments = body.split("/")
    if "" in segments:
        return f"{text!r} has an empty segment ('//')"
    if {".", ".."} & set(segments):
        return f"{text!r} has a '.' or '..' segment"
    return None


def compile_pattern(text: str) -> Pattern:
    """The compiled form of a pattern that :func:`pattern_problem` accepts."""
    directories_only = text.endswith("/")
    segments = tuple((text[:-1] if directories_only else text).split("/"))
    if len(segments) == 1:
        segments = ("**", *segments)
    return Pattern(text, _collapse(segments), directories_only)


def select(files: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> Selection:
    """Split ``files`` (relative POSIX paths) into taken and left out; name unmatched patterns."""
    includes = [compile_pattern(p) for p in include]
    excludes = [compile_pattern(p) for p in exclude]
    unmatched = [
        f"{kind} {pattern.text!r}"
        for kind, patterns in (("include", includes), ("exclude", excludes))
        for pattern in patterns
        if not any(pattern.matches(f) for f in files)
    ]
    taken: list[str] = []
    left_out: list[str] = []
    for path in files:
        wanted = not includes or any(p.matches(path) for p in includes)
        (taken if wanted and not any(p.matches(path) for p in excludes) else left_out).append(path)
    return Selection(tuple(taken), tuple(left_out), tuple(unmatched))


def _collapse(segments: tuple[str, ...]) -> tuple[str, ...]:
    # "**/**" means what "**" means; collapsing keeps the search below linear in such runs.
    out: list[str] = []
    for segment in segments:
        if not (segment == "**" and out and out[-1] == "**"):
            out.append(segment)
    return tuple(out)


def _match(segments: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _match(rest, parts[1:])
