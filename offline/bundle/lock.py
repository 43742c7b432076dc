"""Resolve each env's requirements for the target with uv, into hash-pinned artifacts.

uv resolves for a foreign platform (``--python-platform``) and writes a PEP 751 lock
(pylock.toml) that names every file with its URL and sha256; we pick, per package, the wheel
the target host would choose, or the sdist when no wheel fits (built later on this side).
Resolutions are cached by a key over every input, so an unchanged spec re-resolves nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from offline.bundle.cache import Cache
from offline.bundle.pipenv import hermetic_pip_env
from offline.bundle.spec import Env, LoadedSpec
from offline.bundle.tags import uv_platform, wheel_rank
from offline.errors import ConfigError, NetworkError, NotFoundError, ResolutionError, ToolError
from offline.fsutil import sha256_bytes

TOOLKIT_DIST = "deepseek-offline"


@dataclass(frozen=True)
class Artifact:
    """One file to carry: a wheel, or an sdist that must be built into one."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None
    kind: str  # "wheel" | "sdist"


@dataclass(frozen=True)
class IndexSettings:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    strategy: str = "unsafe-best-match"
    # whether the machine's pip configuration may apply (certificates, proxies, constraints);
    # False: pip runs with none of it, only the options above
    machine_config: bool = True

    def pip_args(self) -> list[str]:
        """Index options as pip (and uv) spell them."""
        args = ["--index-url", self.index_url] if self.index_url else []
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args

    def uv_args(self) -> list[str]:
        return ["--index-strategy", self.strategy, *self.pip_args()]


@dataclass(frozen=True)
class ResolvedEnv:
    name: str
    platform: str
    artifacts: tuple[Artifact, ...]
    cached: bool = field(default=False, compare=False)


@cache
def pip_config() -> dict[str, tuple[str, ...]]:
    """Index settings from this machine's pip configuration (pip.conf and PIP_* variables)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    found: dict[str, dict[str, tuple[str, ...]]] = {"env": {}, "file": {}}
    for line in out.splitlines():
        match = re.match(r"^(:env:|global|install|download)\.([\w-]+)='(.*)'$", line)
        if match and match[2] in ("index-url", "extra-index-url", "find-links"):
            source = "env" if match[1] == ":env:" else "file"
            found[source][match[2]] = tuple(match[3].split())
    return {**found["file"], **found["env"]}


def index_settings(env: Env, spec: LoadedSpec) -> IndexSettings:
    """The env's own settings first, then (unless disabled) this machine's pip configuration."""
    conf = pip_config() if env.use_pip_config else {}
    index_url = env.index_url or next(iter(conf.get("index-url", ())), None)
    links = [_local_link(x, spec) for x in env.find_links]
    return IndexSettings(
        index_url=index_url,
        extra_index_urls=tuple(env.extra_index_urls) + conf.get("extra-index-url", ()),
        find_links=tuple(links) + conf.get("find-links", ()),
        strategy=env.index_strategy,
        machine_config=env.use_pip_config,
    )


def _pip_config_settings() -> IndexSettings:
    conf = pip_config()
    return IndexSettings(
        index_url=next(iter(conf.get("index-url", ())), None),
        extra_index_urls=conf.get("extra-index-url", ()),
        find_links=conf.get("find-links", ()),
    )


def _local_link(link: str, spec: LoadedSpec) -> str:
    if "://" in link:
        return link
    return str(spec.resolve(Path(link)))


def toolkit_requirements(extras: list[str]) -> list[str]:
    """The toolkit's own requirements for ``extras``, from its installed metadata."""
    if not extras:
        return []
    try:
        declared = [Requirement(r) for r in requires(TOOLKIT_DIST) or []]
    except PackageNotFoundError as exc:
        raise ConfigError(
            "toolkit_extras needs the deepseek-offline package metadata",
            fix="install the toolkit first: make install",
        ) from exc
    wanted, seen, out = set(extras), set[str](), list[str]()
    while wanted - seen:
        extra = (wanted - seen).pop()
        seen.add(extra)
        for req in declared:
            if req.marker is None or not req.marker.evaluate({"extra": extra}):
                continue
            if canonicalize_name(req.name) == TOOLKIT_DIST:
                wanted |= req.extras  # `all` names the other extras of this package
                continue
            req.marker = None
            out.append(str(req))
    unknown = set(extras) - {e for r in declared for e in _extras_of(r)}
    if unknown:
        raise ConfigError(f"toolkit_extras: unknown extra(s) {sorted(unknown)}")
    base = [str(r) for r in declared if r.marker is None]
    return sorted(set(base + out))


def _extras_of(req: Requirement) -> set[str]:
    text = str(req.marker or "")
    return set(re.findall(r'extra == "([^"]+)"', text))


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise ToolError(
                "uv is needed to resolve requirements for the target platform",
                fix="pip install 'deepseek-offline[bundle]' (or make install)",
            ) from None
        return found


def _included_files(path: Path, seen: set[Path] | None = None) -> list[Path]:
    """A requirements file and every -r/-c file it pulls in (they all feed the cache key)."""
    seen = seen if seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    if not path.is_file():
        raise NotFoundError(f"requirements file {path} not found", fix="fix the env's path")
    files = [path]
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*(-r|-c|--requirement|--constraint)[\s=]+(\S+)", line)
        if match:
            files += _included_files((path.parent / match[2]).resolve(), seen)
    return files


@dataclass(frozen=True)
class LockInputs:
    env: str
    platform: str
    python: str
    files: tuple[Path, ...]
    extra_requirements: tuple[str, ...]
    index: IndexSettings

    def key(self, uv_version: str) -> str:
        payload = {
            "python": self.python,
            "platform": self.platform,
            "files": [[str(p), p.read_text()] for p in self.files],
            "extra": list(self.extra_requirements),
            "index": [
                self.index.index_url,
                self.index.extra_index_urls,
                self.index.find_links,
                self.index.strategy,
            ],
            "uv": uv_version,
        }
        return sha256_bytes(json.dumps(payload, sort_keys=True).encode())


@cache
def _uv_version(uv: str) -> str:
    return subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()


def resolve(inputs: LockInputs, cache_: Cache, *, refresh: bool = False) -> ResolvedEnv:
    """Resolve ``inputs`` (cached by key) and choose one file per package for the target."""
    uv = uv_binary()
    key = inputs.key(_uv_version(uv))
    lock_path = cache_.root / "locks" / key / "pylock.toml"
    cached = lock_path.is_file() and not refresh
    if not cached:
        _run_uv(uv, inputs, lock_path, cache_, refresh=refresh)
    data = tomllib.loads(lock_path.read_text())
    artifacts = tuple(_choose(p, inputs) for p in data.get("packages", []))
    return ResolvedEnv(inputs.env, inputs.platform, artifacts, cached=cached)


def _run_uv(uv: str, inputs: LockInputs, lock_path: Path, cache_: Cache, *, refresh: bool) -> None:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_.tmp_dir()) as tmp:
        srcs = [str(p) for p in inputs.files]
        if inputs.extra_requirements:
            extra = Path(tmp) / "toolkit.in"
            extra.write_text("\n".join(inputs.extra_requirements) + "\n")
            srcs.append(str(extra))
        out = Path(tmp) / "pylock.toml"
        cmd = [uv, "pip", "compile", *srcs, "--no-config", "--quiet", "--no-header"]
        cmd += ["--python-version", inputs.python]
        cmd += ["--python-platform", uv_platform(inputs.platform)]
        cmd += ["--format", "pylock.toml", "-o", str(out), "--cache-dir", str(cache_.root / "uv")]
        cmd += inputs.index.uv_args() + (["--refresh"] if refresh else [])
        env = None if inputs.index.machine_config else hermetic_pip_env()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise _uv_error(inputs, proc.stderr)
        shutil.move(out, lock_path)


def _uv_error(inputs: LockInputs, stderr: str) -> Exception:
    where = f"env {inputs.env!r} for {inputs.platform} / Python {inputs.python}"
    text = stderr.strip()
    if re.search(
        r"(dns error|[Cc]onnection refused|[Cc]onnect(ion)? (error|failed)|"
        r"timed out|[Nn]etwork is unreachable|error sending request)",
        text,
    ):
        return NetworkError(
            f"cannot reach the package index while resolving {where}:\n{text}",
            fix="check the network/proxy, or point index_url/find_links at a reachable mirror",
        )
    if "no wheels with a matching platform tag" in text or "has no wheels with" in text:
        return ResolutionError(
            f"no wheel for the target platform in {where}:\n{text}",
            fix="pin a version that publishes a wheel for the target, or add a wheel you "
            "built for it through find_links",
        )
    return ResolutionError(
        f"cannot resolve {where}:\n{text}",
        fix="fix or relax the requirement named above; `offline bundle build --refresh` "
        "re-resolves after the index changes",
    )


def _file_url(entry: dict[str, Any]) -> tuple[str, str]:
    url = entry.get("url") or Path(entry["path"]).resolve().as_uri()
    filename = entry.get("name") or unquote(Path(urlparse(url).path).name)
    return url, filename


def _choose(pkg: dict[str, Any], inputs: LockInputs) -> Artifact:
    name, version = pkg["name"], str(pkg["version"])
    ranked: list[tuple[int, dict[str, Any], str, str]] = []
    for wheel in pkg.get("wheels", []):
        url, filename = _file_url(wheel)
        rank = wheel_rank(filename, inputs.python, inputs.platform)
        if rank is not None:
            ranked.append((rank, wheel, url, filename))
    if ranked:
        _, wheel, url, filename = min(ranked, key=lambda r: r[0])
        return _artifact(name, version, wheel, url, filename, "wheel")
    if sdist := pkg.get("sdist"):
        url, filename = _file_url(sdist)
        return _artifact(name, version, sdist, url, filename, "sdist")
    raise ResolutionError(
        f"{name}=={version}: no wheel for {inputs.platform} / Python {inputs.python} "
        f"and no sdist (env {inputs.env!r})",
        fix="pin a version that publishes a wheel for the target platform",
    )


def _artifact(
    name: str, version: str, entry: dict[str, Any], url: str, filename: str, kind: str
) -> Artifact:
    sha = (entry.get("hashes") or {}).get("sha256")
    if not sha:
        raise ResolutionError(f"{name}=={version}: the index gives no sha256 for {filename}")
    return Artifact(name, version, filename, url, sha, entry.get("size"), kind)


def lock_inputs(env: Env, spec: LoadedSpec, platform: str) -> LockInputs:
    files = _included_files(spec.resolve(env.requirements)) if env.requirements else []
    return LockInputs(
        env=env.name,
        platform=platform,
        python=spec.spec.target.python,
        files=tuple(files),
        extra_requirements=tuple(toolkit_requirements(env.toolkit_extras)),
        index=index_settings(env, spec),
    )


def bootstrap_inputs(spec: LoadedSpec, platform: str) -> LockInputs:
    envs = spec.spec.env
    index = index_settings(envs[0], spec) if envs else _pip_config_settings()
    return LockInputs(
        env="bootstrap",
        platform=platform,
        python=spec.spec.target.python,
        files=(),
        extra_requirements=tuple(spec.spec.bootstrap.requirements),
        index=index,
    )
