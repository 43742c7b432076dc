"""Configuration files, one way for all of them: the bundle spec, ``train.yaml``,
``params.yaml`` and its cleaning steps, the serve settings, the labeling contract.

- :class:`Strict`, the base of every config model: an unknown key is an error (a typo must not
  be silently ignored);
- :func:`validate`: a model from plain data, or one :class:`ConfigError` that lists every
  problem, one per line, each as ``where: what`` (``a.b[0].c``);
- :func:`read_yaml` / :func:`read_toml`: the file's data, or a ``ConfigError`` naming the file;
- :func:`apply_overrides`: ``a.b=value`` pairs from a command line onto loaded data.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from offline.errors import ConfigError, NotFoundError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """A config model: every key must be one it declares."""

    model_config = ConfigDict(extra="forbid")


def location(loc: Iterable[int | str]) -> str:
    """``("image", 0, "platform")`` as ``image[0].platform``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems(exc: ValidationError) -> list[str]:
    """Each of pydantic's errors as ``where: what``; an unknown key says so."""
    lines = []
    for err in exc.errors():
        where = location(err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        else:
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return lines


def config_error(where: str, found: list[str], fix: str = "") -> ConfigError:
    """One error for every problem of ``where``, one per line."""
    listed = "\n".join(f"  {p}" for p in found)
    return ConfigError(f"{where} has {len(found)} problem(s):\n{listed}", fix=fix)


def validate(model: type[M], data: Any, where: str, fix: str = "") -> M:
    """``model`` from ``data``; every problem in one :class:`ConfigError` naming ``where``.

    Raises:
        ConfigError: ``data`` is not a mapping, or breaks any rule of ``model``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level", fix=fix)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(where, problems(exc), fix) from None


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} not found", fix="check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", fix=f"save {path} as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def read_yaml(path: Path, what: str = "config") -> Any:
    """The data of the YAML file ``path`` (``{}`` when empty).

    Raises:
        NotFoundError: no such file. ConfigError: unreadable, not UTF-8, or not YAML.
    """
    import yaml

    text = _read(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", fix="fix the syntax") from None
    return {} if data is None else data


def read_toml(path: Path, what: str = "config") -> dict[str, Any]:
    """The data of the TOML file ``path``.

    Raises:
        NotFoundError: no such file. ConfigError: unreadable, not UTF-8, or not TOML.
    """
    return parse_toml(_read(path, what), path)


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", fix="fix the syntax") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``a.b=value`` pairs onto ``data``; values are parsed as YAML (``3``, ``true``, ``[x]``)."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value", fix="e.g. zero_stage=3")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return data
