"""A PEP 503 "simple" index over the bundle's wheels/, readable through file:// URLs."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from offline.fsutil import atomic_write_text

_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n{links}\n</body></html>\n"
)


def write_simple_index(root: Path, wheels: dict[str, str]) -> None:
    """Write ``root/simple`` for ``wheels`` (``{filename: sha256}`` of files in root/wheels)."""
    projects: dict[str, list[str]] = defaultdict(list)
    for filename in sorted(wheels):
        name = canonicalize_name(parse_wheel_filename(filename)[0])
        href = f"../../wheels/{filename}#sha256={wheels[filename]}"
        projects[name].append(f'<a href="{html.escape(href)}">{html.escape(filename)}</a><br>')
    simple = root / "simple"
    for project, links in projects.items():
        atomic_write_text(
            simple / project / "index.html",
            _PAGE.format(title=f"Links for {project}", links="\n".join(links)),
        )
    top = [f'<a href="{n}/">{n}</a><br>' for n in sorted(projects)]
    atomic_write_text(
        simple / "index.html", _PAGE.format(title="Simple index", links="\n".join(top))
    )
