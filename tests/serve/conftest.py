"""The tiny LM and classifier, exported once per session to every host format; a helper that
runs ``offline serve`` as a real uvicorn process on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.sample_workspace import sample_workspace, tiny_classifier

SEQ_LEN = 40


@dataclass
class Exports:
    root: Path
    lm: Path  # every host format, fp32
    cls: Path  # every host format, fp32
    cls_int8: Path  # TorchScript int8: the canary


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    from offline.deploy.export import export

    root = sample_workspace(tmp_path_factory.mktemp("serve"), rows=200, seed=5, model_vocab=2000)
    lm = root / "models/lm"
    (root / "models/tiny").rename(lm)
    cls = tiny_classifier(root, lm, root / "models/classifier")
    every = ["torchscript", "pt2", "tvm"]
    for model, data, out, formats, quantize in (
        (lm, "conversations", "lm", every, "none"),
        (cls, "tickets", "classifier", every, "none"),
        (cls, "tickets", "classifier-int8", ["torchscript"], "int8"),
    ):
        export(
            model,
            root / "models/export" / out,
            formats=formats,
            quantize=quantize,
            seq_len=SEQ_LEN,
            sample=root / f"data/split/{data}/test.parquet",
            sample_rows=16,
            latency_runs=1,
        )
    ex = root / "models/export"
    return Exports(root, ex / "lm", ex / "classifier", ex / "classifier-int8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    log: Path


@contextlib.contextmanager
def running(*args: str, cwd: Path, log: Path, timeout: float = 240) -> Iterator[Server]:
    """``offline serve ARGS`` on a free loopback port, until /readyz says ready."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offline", "serve", "--port", str(port), *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"offline serve exited {proc.returncode}: {log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"offline serve not ready in {timeout} s: {log.read_text()}")
            time.sleep(0.3)
        yield Server(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def smollm2_export(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2-135M-Instruct exported for the eager backend (no artifact): what
    ``offline serve`` runs with its KV cache and continuous batching."""
    from offline.deploy.export import export

    out = tmp_path_factory.mktemp("smollm2-export") / "smollm2"
    export(smollm2, out, formats=[], seq_len=32, latency_runs=1)
    return out
