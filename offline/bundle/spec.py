"""The bundle spec (TOML): what to carry across the gap, for which target."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from offline.bundle.patterns import pattern_problem
from offline.config import Strict, parse_toml, validate
from offline.errors import NotFoundError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PLATFORM = re.compile(r"^manylinux_(\d+)_(\d+)_(x86_64|aarch64)$")


class _Strict(Strict):
    model_config = ConfigDict(frozen=True)


class BundleInfo(_Strict):
    name: str
    version: str
    description: str = ""

    @field_validator("name", "version")
    @classmethod
    def _safe(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '.', '_' or '-'")
        return value


# The pre-PEP 600 names pip's documentation still shows, and the glibc each one means.
LEGACY_PLATFORMS = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_LEGACY_PLATFORM = re.compile(r"^(manylinux2014|manylinux2010|manylinux1)_(x86_64|aarch64)$")


def pep600_platform(tag: str) -> str:
    """``manylinux2014_x86_64`` → ``manylinux_2_17_x86_64``; any other tag as it is."""
    match = _LEGACY_PLATFORM.match(tag)
    if match is None:
        return tag
    major, minor = LEGACY_PLATFORMS[match[1]]
    return f"manylinux_{major}_{minor}_{match[2]}"


class Target(_Strict):
    python: str = "3.11"
    platforms: list[str] = Field(min_length=1)
    implementation: Literal["cp"] = "cp"
    # The tags as the spec wrote them, when a legacy alias was translated (the manifest keeps both).
    platforms_as_written: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("platforms"), list):
            return data
        written = data["platforms"]
        translated = [pep600_platform(p) if isinstance(p, str) else p for p in written]
        data = {k: v for k, v in data.items() if k != "platforms_as_written"}
        return {
            **data,
            "platforms": translated,
            "platforms_as_written": list(written) if translated != written else None,
        }

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        if not re.fullmatch(r"3\.\d{1,2}", value):
            raise ValueError(f"{value!r} is not a Python minor version like '3.11'")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not _PLATFORM.match(p)]
        if bad:
            raise ValueError(
                f"unsupported platform tag(s) {bad}; use e.g. 'manylinux_2_28_x86_64' "
                "or 'manylinux_2_28_aarch64' (or a legacy alias such as 'manylinux2014_x86_64')"
            )
        return value


class Toolkit(_Strict):
    """Whether the toolkit's own wheel travels in the bundle."""

    wheel: bool = True


class Bootstrap(_Strict):
    requirements: list[str] = ["pip", "setuptools", "wheel"]


class Env(_Strict):
    name: str
    requirements: Path | None = None
    toolkit_extras: list[str] = []
    index_url: str | None = None
    extra_index_urls: list[str] = []
    find_links: list[str] = []
    use_pip_config: bool = True
    # pip's behaviour: the best match across all indexes. "first-index" guards against
    # dependency confusion when an internal index shadows public names.
    index_strategy: Literal["unsafe-best-match", "first-index"] = "unsafe-best-match"

    @model_validator(mode="after")
    def _has_input(self) -> Env:
        if self.requirements is None and not self.toolkit_extras:
            raise ValueError("an env needs 'requirements' or 'toolkit_extras'")
        if not _NAME.match(self.name):
            raise ValueError(f"env name {self.name!r} must be letters, digits, '.', '_' or '-'")
        return self


class Image(_Strict):
    ref: str
    platform: str = "linux/amd64"
    tls_verify: bool = True
    name: str | None = None

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str) -> str:
        if not re.fullmatch(r"linux/(amd64|arm64)(/v\d)?", value):
            raise ValueError(f"{value!r} is not a platform like 'linux/amd64' or 'linux/arm64'")
        return value

    @property
    def archive_name(self) -> str:
        base = self.name or self.ref.split("/")[-1].replace(":", "-").replace("@", "-")
        return re.sub(r"[^A-Za-z0-9._-]", "_", base) + f".{self.platform.split('/')[1]}.oci.tar"


class Model(_Strict):
    name: str
    path: Path | None = None
    hub: str | None = None
    revision: str | None = None
    allow_pickle: bool = False
    # Glob patterns over the model's files (offline/bundle/patterns.py); none: every file.
    include: list[str] = []
    exclude: list[str] = []

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        problems = [why for why in map(pattern_problem, value) if why]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Model:
        if (self.path is None) == (self.hub is None):
            raise ValueError("a model needs exactly one of 'path' or 'hub'")
        if not _NAME.match(self.name):
            raise ValueError(f"model name {self.name!r} must be letters, digits, '.', '_' or '-'")
        return self


class Files(_Strict):
    src: Path
    dest: str
    sha256: str | None = None

    @field_validator("dest")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = Path(value).parts
        if not parts or Path(value).is_absolute() or ".." in parts:
            raise ValueError(f"dest {value!r} must be a relative path without '..'")
        return value


class Spec(_Strict):
    bundle: BundleInfo
    target: Target
    toolkit: Toolkit = Toolkit()
    bootstrap: Bootstrap = Bootstrap()
    env: list[Env] = []
    image: list[Image] = []
    model: list[Model] = []
    files: list[Files] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Spec:
        for kind, names in (
            ("env", [e.name for e in self.env]),
            ("model", [m.name for m in self.model]),
            ("image", [i.archive_name for i in self.image]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} name(s): {', '.join(dupes)}")
        if any(e.name == "bootstrap" for e in self.env):
            raise ValueError("env name 'bootstrap' is reserved for pip/setuptools/wheel")
        return self


class LoadedSpec(BaseModel):
    """A validated spec with the directory its relative paths are resolved against."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: Spec
    path: Path
    text: str

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else (self.root / relative)


def parse_spec(text: str, path: Path) -> LoadedSpec:
    """Validate spec ``text`` (read from ``path``); every problem is reported at once."""
    spec = validate(
        Spec,
        parse_toml(text, path),
        f"{path} (bundle spec)",
        fix="see the spec reference in README.md (section 'Bundle spec')",
    )
    return LoadedSpec(spec=spec, path=path.resolve(), text=text)


def load_spec(path: Path) -> LoadedSpec:
    """Read and validate the spec at ``path``."""
    if not path.is_file():
        raise NotFoundError(
            f"bundle spec {path} not found", fix="pass --spec bundle/bundle.toml or another spec"
        )
    return parse_spec(path.read_text(encoding="utf-8"), path)
