"""Bring artifacts into the cache: download by URL (checked against the lock's sha256), and
build sdist-only packages into wheels here, so the isolated host never needs a compiler."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from offline.bundle.cache import Cache
from offline.bundle.lock import Artifact, IndexSettings
from offline.bundle.pipenv import hermetic_pip_env
from offline.bundle.progress import Reporter
from offline.bundle.tags import wheel_rank
from offline.errors import NetworkError, NotFoundError, ResolutionError, ToolError
from offline.fsutil import disk_errors

_TIMEOUT = httpx.Timeout(60.0, connect=15.0)


@dataclass
class FetchStats:
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    cache_hits: int = 0
    built_sdists: int = 0


def _ssl_context() -> ssl.SSLContext:
    # The connected machine's trust store, plus a corporate CA pip is told about, if any.
    ctx = ssl.create_default_context()
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if (path := os.environ.get(var)) and Path(path).is_file():
            ctx.load_verify_locations(path)
    return ctx


def http_client() -> httpx.Client:
    return httpx.Client(timeout=_TIMEOUT, verify=_ssl_context(), follow_redirects=True)


def download_all(
    artifacts: Iterable[Artifact],
    cache: Cache,
    reporter: Reporter,
    stats: FetchStats,
    *,
    workers: int = 6,
) -> None:
    """Ensure every artifact's blob is in the cache; cached ones cost no request at all."""
    unique = {a.sha256: a for a in artifacts}
    missing = [a for a in unique.values() if not cache.has(a.sha256)]
    stats.cache_hits += len(unique) - len(missing)
    if not missing:
        return
    total = sum(a.size or 0 for a in missing) or None
    reporter.start("download", total)
    with http_client() as client, ThreadPoolExecutor(max_workers=workers) as pool:
        for size in pool.map(lambda a: _download(a, cache, client, reporter), missing):
            stats.downloaded_files += 1
            stats.downloaded_bytes += size
    reporter.done("download")


def _download(art: Artifact, cache: Cache, client: httpx.Client, reporter: Reporter) -> int:
    tmp = cache.new_tmp_file(suffix=f"-{art.filename}")
    try:
        parsed = urlparse(art.url)
        with disk_errors(tmp):
            if parsed.scheme == "file":
                _copy_local(Path(unquote(parsed.path)), tmp, art)
            else:
                _get(art, tmp, client, reporter)
        size = tmp.stat().st_size
        cache.ingest(tmp, art.sha256, what=art.filename)
        return size
    finally:
        tmp.unlink(missing_ok=True)


def _copy_local(src: Path, dest: Path, art: Artifact) -> None:
    if not src.is_file():
        raise NotFoundError(f"{art.filename}: {src} does not exist (from the lock of {art.name})")
    shutil.copyfile(src, dest)


def _get(art: Artifact, dest: Path, client: httpx.Client, reporter: Reporter) -> None:
    try:
        with client.stream("GET", art.url) as resp, dest.open("wb") as fh:
            if resp.status_code == 404:
                raise NotFoundError(
                    f"{art.filename}: the index lists it but {art.url} answers 404",
                    fix="re-resolve with `offline bundle build --refresh`",
                )
            resp.raise_for_status()
            for chunk in resp.iter_bytes(1 << 20):
                fh.write(chunk)
                reporter.advance("download", len(chunk))
    except httpx.HTTPStatusError as exc:
        raise NetworkError(
            f"{art.filename}: {art.url} answered {exc.response.status_code}"
        ) from exc
    except httpx.TransportError as exc:
        raise NetworkError(
            f"cannot download {art.filename} from {art.url}: {exc}",
            fix="check the network/proxy and retry; finished downloads are kept in the cache",
        ) from exc


def build_wheel(
    sdist: Artifact,
    cache: Cache,
    index: IndexSettings,
    python: str,
    platform: str,
    stats: FetchStats,
) -> Artifact:
    """Build ``sdist`` into a wheel usable on the target (cached by the sdist's sha256)."""
    meta = cache.read_meta("sdist-builds", sdist.sha256)
    if meta and cache.has(meta["sha256"]):
        return _built(sdist, meta["filename"], meta["sha256"])
    with tempfile.TemporaryDirectory(dir=cache.tmp_dir()) as tmp:
        src = Path(tmp) / sdist.filename
        shutil.copyfile(cache.blob_path(sdist.sha256), src)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out)]
        env = None if index.machine_config else hermetic_pip_env()
        proc = subprocess.run(
            [*cmd, *index.pip_args(), str(src)], capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            raise ToolError(
                f"building {sdist.filename} into a wheel failed:\n{proc.stderr.strip()[-3000:]}",
                fix="install the build requirements it names, or add a prebuilt wheel for the "
                "target through find_links",
            )
        wheel = next(out.glob("*.whl"))
        if wheel_rank(wheel.name, python, platform) is None:
            raise ResolutionError(
                f"{sdist.name}=={sdist.version} is published only as an sdist and builds "
                f"{wheel.name} here, which does not run on {platform} / Python {python}",
                fix="build it on a machine like the target and add the wheel through find_links",
            )
        sha = cache.ingest(wheel, what=wheel.name)
    cache.write_meta("sdist-builds", sdist.sha256, {"filename": wheel.name, "sha256": sha})
    stats.built_sdists += 1
    return _built(sdist, wheel.name, sha)


def _built(sdist: Artifact, filename: str, sha: str) -> Artifact:
    return Artifact(sdist.name, sdist.version, filename, sdist.url, sha, None, "built")
