"""``offline bundle build``: spec → a verified, signed, optionally split bundle directory.

Everything is assembled in a hidden temporary directory next to ``out`` and renamed into place
at the very end, so a failed or interrupted build never leaves a bundle that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from offline import __version__
from offline.bundle import sbom as sbom_
from offline.bundle.cache import Cache, default_cache_dir
from offline.bundle.fetch import FetchStats, build_wheel, download_all
from offline.bundle.images import fetch_image
from offline.bundle.lock import (
    Artifact,
    ResolvedEnv,
    bootstrap_inputs,
    lock_inputs,
    resolve,
)
from offline.bundle.models import ModelSource, collect_model
from offline.bundle.progress import NullReporter, Reporter
from offline.bundle.sign import load_private_key, public_pem, sign
from offline.bundle.simple import write_simple_index
from offline.bundle.spec import LoadedSpec, load_spec
from offline.bundle.split import fat32_warning, write_parts
from offline.errors import ConfigError, IntegrityError, NotFoundError, ResourceError, ToolError
from offline.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    disk_errors,
    link_or_copy,
    replace_dir,
    sha256_bytes,
    sha256_file,
    sha256_many,
    write_sha256sums,
)

FORMAT_VERSION = 1
# Written after the manifest at the bundle's top; everything else is listed in it.
_META_FILES = {"manifest.json", "manifest.sig", "SHA256SUMS"}


@dataclass
class BuildResult:
    out: Path
    kind: str
    files: int
    bytes: int
    envs: dict[str, int]
    images: int
    models: int
    signed: bool
    parts_index: Path | None
    seconds: float
    stats: FetchStats = field(default_factory=FetchStats)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        data["parts_index"] = str(self.parts_index) if self.parts_index else None
        return data


@dataclass
class _Staged:
    """What has been placed in the staging directory, for the manifest and the SBOM."""

    wheels: dict[str, str] = field(default_factory=dict)  # filename -> sha256
    envs: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    toolkit_wheel: str | None = None
    warnings: list[str] = field(default_factory=list)


def build(
    spec_path: Path,
    out: Path,
    *,
    key: Path | None = None,
    max_part_size: int | None = None,
    since: Path | None = None,
    cache_dir: Path | None = None,
    refresh: bool = False,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Build the bundle described by ``spec_path`` into ``out`` (replacing an older bundle)."""
    started = time.monotonic()
    reporter = reporter or NullReporter()
    loaded = load_spec(spec_path)
    signing_key = load_private_key(key) if key else None
    base = _load_base(since) if since else None
    out = out.resolve()
    _check_out(out)
    cache = Cache(cache_dir or default_cache_dir())
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        stager = _Stager(loaded, stage, cache, reporter, refresh)
        staged, stats = stager.run(), stager.stats
        created = _created()
        manifest = _finish(loaded, stage, staged, base, created, signing_key, reporter)
        replace_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    parts_index = None
    if max_part_size:
        parts_index = _split(loaded, out, max_part_size, created, reporter)
        staged.warnings.extend(filter(None, [fat32_warning(max_part_size)]))
    return BuildResult(
        out=out,
        kind=manifest["kind"],
        files=len(manifest["files"]),
        bytes=sum(f["size"] for f in manifest["files"]),
        envs={e["name"]: len(e["packages"]) for e in manifest["envs"]},
        images=len(manifest["images"]),
        models=len(manifest["models"]),
        signed=signing_key is not None,
        parts_index=parts_index,
        seconds=round(time.monotonic() - started, 2),
        stats=stats,
        warnings=staged.warnings,
    )


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise ConfigError(
            f"--out {out} is a non-empty directory that is not a bundle; refusing to replace it",
            fix="choose an empty or new directory for --out",
        )


# --- payload ---------------------------------------------------------------------------------


@dataclass
class _Stager:
    """Places the payload in the staging directory and records what it placed."""

    loaded: LoadedSpec
    stage: Path
    cache: Cache
    reporter: Reporter
    refresh: bool
    stats: FetchStats = field(default_factory=FetchStats)
    staged: _Staged = field(default_factory=_Staged)

    def run(self) -> _Staged:
        # Models first: a pattern that matches nothing stops the build before any download.
        models = [
            collect_model(model, self.loaded, self.cache.root / "hub")
            for model in self.loaded.spec.model
        ]
        self.envs()
        if self.loaded.spec.toolkit.wheel:
            self.toolkit_wheel()
        write_simple_index(self.stage, self.staged.wheels)
        self.images()
        self.models(models)
        self.files()
        _copy_installer(self.stage)
        return self.staged

    def envs(self) -> None:
        loaded, cache = self.loaded, self.cache
        spec = loaded.spec
        plats = spec.target.platforms
        inputs = [bootstrap_inputs(loaded, p) for p in plats if spec.bootstrap.requirements]
        inputs += [lock_inputs(env, loaded, p) for env in spec.env for p in plats]
        self.reporter.start("resolve", len(inputs))
        resolved: list[ResolvedEnv] = []
        for item in inputs:
            resolved.append(resolve(item, cache, refresh=self.refresh))
            self.reporter.advance("resolve")
        self.reporter.done("resolve")
        _check_free_space(cache, [a for r in resolved for a in r.artifacts])
        download_all([a for r in resolved for a in r.artifacts], cache, self.reporter, self.stats)
        by_env: dict[str, list[list[Artifact]]] = defaultdict(list)
        for res, item in zip(resolved, inputs, strict=True):
            files = [
                build_wheel(a, cache, item.index, item.python, item.platform, self.stats)
                if a.kind == "sdist"
                else a
                for a in res.artifacts
            ]
            by_env[res.name].append(files)
        for name, per_platform in by_env.items():
            self.env(name, per_platform)

    def env(self, name: str, per_platform: list[list[Artifact]]) -> None:
        # canonical name -> (name, version, {filename: sha256})
        pins: dict[str, tuple[str, str, dict[str, str]]] = {}
        for artifacts in per_platform:
            for art in artifacts:
                prior = pins.setdefault(art.name.lower(), (art.name, art.version, {}))
                if prior[1] != art.version:
                    raise ConfigError(
                        f"env {name!r}: {art.name} resolves to {prior[1]} on one target "
                        f"platform and {art.version} on another",
                        fix=f"pin {art.name} to one version in the env's requirements",
                    )
                prior[2][art.filename] = art.sha256
                self.place_wheel(art)
        lines, packages = [], []
        for pkg_name, version, files in sorted(pins.values(), key=lambda p: p[0].lower()):
            hashes = " ".join(f"--hash=sha256:{h}" for h in sorted(set(files.values())))
            lines.append(f"{pkg_name}=={version} {hashes}")
            for fn, sha in sorted(files.items()):
                packages.append(
                    {"name": pkg_name, "version": version, "file": f"wheels/{fn}", "sha256": sha}
                )
                self.staged.components.append(sbom_.wheel_component(pkg_name, version, fn, sha))
        header = (
            f"# env {name}: pip install --index-url file://BUNDLE/simple --require-hashes -r THIS\n"
        )
        lock = header + "\n".join(lines) + "\n"
        atomic_write_text(self.stage / "locks" / f"{name}.lock", lock)
        self.staged.envs.append(
            {
                "name": name,
                "lock": f"locks/{name}.lock",
                "lock_sha256": sha256_bytes(lock.encode()),
                "packages": packages,
            }
        )

    def place_wheel(self, art: Artifact) -> None:
        known = self.staged.wheels.get(art.filename)
        if known is not None and known != art.sha256:
            raise IntegrityError(
                f"two different files are both named {art.filename} "
                f"(sha256 {known} and {art.sha256})",
                fix="use one index per package, or pin the same source in every env",
            )
        if known is None:
            link_or_copy(self.cache.blob_path(art.sha256), self.stage / "wheels" / art.filename)
            self.staged.wheels[art.filename] = art.sha256

    def toolkit_wheel(self) -> None:
        root = _toolkit_source()
        sources = [*sorted((root / "offline").rglob("*.py")), root / "pyproject.toml"]
        key = sha256_bytes(
            "".join(f"{p.relative_to(root)}:{sha256_file(p)}\n" for p in sources).encode()
        )
        meta = self.cache.read_meta("toolkit-wheels", key)
        if not (meta and self.cache.has(meta["sha256"])):
            meta = _build_toolkit_wheel(root, self.cache)
            self.cache.write_meta("toolkit-wheels", key, meta)
        art = Artifact(
            "deepseek-offline", __version__, meta["filename"], "", meta["sha256"], None, "wheel"
        )
        self.place_wheel(art)
        self.staged.toolkit_wheel = f"wheels/{meta['filename']}"
        self.staged.components.append(
            sbom_.wheel_component(art.name, art.version, art.filename, art.sha256)
        )

    def images(self) -> None:
        for image in self.loaded.spec.image:
            record = fetch_image(image, self.cache, self.reporter, refresh=self.refresh)
            rel = f"images/{image.archive_name}"
            link_or_copy(self.cache.blob_path(record.archive_sha256), self.stage / rel)
            self.staged.images.append({**record.to_json(), "path": rel})
            self.staged.components.append(
                sbom_.image_component(record.ref, record.digest, record.platform)
            )

    def models(self, sources: list[ModelSource]) -> None:
        for model, src in zip(self.loaded.spec.model, sources, strict=True):
            dest = self.stage / "models" / model.name
            task = f"model {model.name}"
            self.reporter.start(task, len(src.files))
            for rel in src.files:
                _copy(src.directory / rel, dest / rel)
                self.reporter.advance(task)
            self.reporter.done(task)
            self.staged.models.append(
                {
                    "name": model.name,
                    "source": src.source,
                    "path": f"models/{model.name}",
                    "include": model.include,
                    "exclude": model.exclude,
                    "taken": [f.as_posix() for f in src.files],
                    "left_out": [f.as_posix() for f in src.left_out],
                }
            )
            self.staged.warnings.extend(src.warnings)

    def files(self) -> None:
        for entry in self.loaded.spec.files:
            src = self.loaded.resolve(entry.src)
            dest = self.stage / "files" / entry.dest
            if src.is_dir():
                for path in sorted(p for p in src.rglob("*") if p.is_file()):
                    _copy(path, dest / path.relative_to(src))
            elif src.is_file():
                if entry.sha256 and sha256_file(src) != entry.sha256.lower():
                    raise IntegrityError(f"files: {src} does not match the sha256 the spec gives")
                _copy(src, dest)
            else:
                raise NotFoundError(f"files: {src} not found", fix="fix 'src' in the spec")


def _installer_files() -> dict[str, Path]:
    """The isolated host's installer and its stdlib-only helpers, by their bundle name."""
    package = Path(__file__).resolve().parent
    return {
        "install-offline.sh": package.parents[1] / "scripts" / "install-offline.sh",
        "offline-archive.py": package / "archive.py",
        "offline-installed.py": package / "installed.py",
    }


def _copy_installer(directory: Path) -> None:
    """Put the installer at the top of a bundle or beside its volumes, when the source has it."""
    files = _installer_files()
    if not files["install-offline.sh"].is_file():
        return  # a toolkit installed from its wheel: scripts/ is not part of it
    for name, src in files.items():
        _copy(src, directory / name)
        os.chmod(directory / name, 0o755)


def _check_free_space(cache: Cache, artifacts: list[Artifact]) -> None:
    need = sum(
        a.size or 0 for a in {a.sha256: a for a in artifacts}.values() if not cache.has(a.sha256)
    )
    cache.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache.root).free
    if need > free:
        raise ResourceError(
            f"the downloads need {need / 1e9:.1f} GB but {cache.root} has {free / 1e9:.1f} GB free",
            fix="free space there or point --cache-dir at a larger disk",
        )


def _toolkit_source() -> Path:
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "deepseek-offline"' not in pyproject.read_text():
        raise NotFoundError(
            "the toolkit's own wheel is built from its source checkout, which was not found",
            fix="run from a source checkout, or set [toolkit] wheel = false in the spec",
        )
    return root


def _build_toolkit_wheel(root: Path, cache: Cache) -> dict[str, str]:
    with tempfile.TemporaryDirectory(dir=cache.tmp_dir()) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            tmp,
            str(root),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(
                f"building the toolkit's wheel failed:\n{proc.stderr[-3000:]}",
                fix="make install (it provides setuptools and wheel)",
            )
        wheel = next(Path(tmp).glob("*.whl"))
        return {"filename": wheel.name, "sha256": cache.ingest(wheel, what=wheel.name)}


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(dest):
        shutil.copyfile(src, dest)


# --- manifest, checksums, signature ------------------------------------------------------------


def _load_base(since: Path) -> dict[str, Any]:
    path = since / "manifest.json" if since.is_dir() else since
    if not path.is_file():
        raise NotFoundError(f"--since {since}: no manifest.json there")
    try:
        data: dict[str, Any] = json.loads(path.read_bytes())
        data["_sha256"] = sha256_file(path)
        return data
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--since {path} is not a bundle manifest: {exc}") from exc


def _finish(
    loaded: LoadedSpec,
    stage: Path,
    staged: _Staged,
    base: dict[str, Any] | None,
    created: str,
    signing_key: Any,
    reporter: Reporter,
) -> dict[str, Any]:
    spec = loaded.spec
    for model in staged.models:
        model_files = _hash_tree(stage, stage / model["path"], reporter)
        model["files"] = model_files
        staged.components.append(sbom_.model_component(model["name"], model["source"], model_files))
    doc = sbom_.sbom(spec.bundle.name, spec.bundle.version, created, __version__, staged.components)
    atomic_write_text(stage / "sbom.cdx.json", json.dumps(doc, indent=2) + "\n")
    if signing_key is not None:
        atomic_write_bytes(stage / "manifest.pub", public_pem(signing_key.public_key()))
    files = _hash_tree(stage, stage, reporter)
    base_files = _prune_base(stage, files, base) if base else []
    files = [f for f in files if f not in base_files]
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "diff" if base else "full",
        "created": created,
        "toolkit_version": __version__,
        "bundle": spec.bundle.model_dump(),
        "target": spec.target.model_dump(exclude_none=True),
        "spec_sha256": sha256_bytes(loaded.text.encode()),
        "envs": staged.envs,
        "toolkit_wheel": staged.toolkit_wheel,
        "images": staged.images,
        "models": [
            {k: v for k, v in m.items() if k != "files"} | {"files": len(m["files"])}
            for m in staged.models
        ],
        "files": files,
        "base": _base_ref(base) if base else None,
        "base_files": base_files,
    }
    raw = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
    atomic_write_bytes(stage / "manifest.json", raw)
    if signing_key is not None:
        atomic_write_bytes(stage / "manifest.sig", sign(raw, signing_key))
    write_sha256sums(stage, [(f["sha256"], f["path"]) for f in files])
    return manifest


def _hash_tree(stage: Path, top: Path, reporter: Reporter) -> list[dict[str, Any]]:
    paths = [
        p
        for p in sorted(top.rglob("*"))
        if p.is_file() and str(p.relative_to(stage)) not in _META_FILES  # only the top-level ones
    ]
    reporter.start("hash", sum(p.stat().st_size for p in paths))
    digests = sha256_many(paths, on_bytes=lambda n: reporter.advance("hash", n))
    reporter.done("hash")
    return [
        {"path": str(p.relative_to(stage)), "size": p.stat().st_size, "sha256": digests[p]}
        for p in paths
    ]


# Always carried, even in a diff: they describe the whole new state.
_ALWAYS = ("locks/", "simple/", "sbom.cdx.json", "manifest.pub")


def _prune_base(
    stage: Path, files: list[dict[str, Any]], base: dict[str, Any]
) -> list[dict[str, Any]]:
    have = {f["path"]: f["sha256"] for f in base.get("files", []) + base.get("base_files", [])}
    same = [
        f for f in files if have.get(f["path"]) == f["sha256"] and not f["path"].startswith(_ALWAYS)
    ]
    for f in same:
        (stage / f["path"]).unlink()
    for directory in sorted((p for p in stage.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    return same


def _base_ref(base: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": base.get("bundle", {}).get("name"),
        "version": base.get("bundle", {}).get("version"),
        "created": base.get("created"),
        "manifest_sha256": base["_sha256"],
    }


def _split(loaded: LoadedSpec, out: Path, part_size: int, created: str, reporter: Reporter) -> Path:
    stem = f"{loaded.spec.bundle.name}-{loaded.spec.bundle.version}"
    final = out.with_name(f"{out.name}.parts")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.parts-"))
    try:
        mtime = int(
            datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        )
        total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        reporter.start("pack", total)
        write_parts(out, tmp, stem, part_size, mtime, lambda n: reporter.advance("pack", n))
        _copy_installer(tmp)
        reporter.done("pack")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / f"{stem}.parts.json"
