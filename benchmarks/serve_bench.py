"""Benchmark ``offline serve``: micro-batching and the server's own overhead, as ratios.

Goals (issue "offline serve"): throughput at 32 concurrent clients with micro-batching >= 3x
the same server without it (``--max-batch 1``); server overhead at batch 1 <= 15 % over a
direct call of the same backend; p50/p99 latency.

One run exports the tiny classifier (the sample workspace's ticket labels, untrained: speed
does not depend on the weights) with ``offline export``, or takes ``--model DIR``, an export
directory. Two real servers (uvicorn, loopback) serve it side by side, one batching and one
not; the load alternates between them round by round so that both see the same machine.
The overhead compares one client's sequential ``/predict`` requests with tokenize + forward
called in this process, also alternated.

Run: ``.venv/bin/python benchmarks/serve_bench.py [--model DIR] [--backend eager]
[--rounds 3] [--seconds 5] [--json]``. It reports, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEXT = "my parcel never arrived and nobody answers the phone, please refund the order"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _export(root: Path, backend: str) -> Path:
    from offline.deploy.export import export
    from tests.sample_workspace import sample_workspace, tiny_classifier

    sample_workspace(root, rows=300, seed=1, model_vocab=2000)
    model = tiny_classifier(root, root / "models/tiny", root / "models/classifier")
    out = root / "models/export/classifier"
    formats = ["torchscript"] if backend in ("auto", "eager") else [backend]
    with contextlib.redirect_stdout(sys.stderr):
        export(
            model,
            out,
            formats=formats,
            quantize="int8",
            sample=root / "data/split/tickets/test.parquet",
            sample_rows=64,
            latency_runs=1,
        )
    return out


async def _load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive connections, each sending its next request when the last is
    answered. Raw HTTP/1.1 over asyncio streams: the load generator shares the machine with
    the server, so it must cost as little CPU as possible (an httpx client costs more per
    request than the server does)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = json.dumps({"texts": [TEXT]}).encode()
    request = (
        f"POST /predict HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            errors += not head.startswith(b"HTTP/1.1 200")
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "seconds": elapsed, "errors": errors, "lat": latencies}


def _sequential(url: str, n: int) -> list[float]:
    """One client, one request at a time, on a kept-alive connection (http.client: the
    lightest client, so that the figure is the server's)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    body = json.dumps({"texts": [TEXT]})
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/predict", body, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        out.append(time.perf_counter() - t)
        assert response.status == 200, response.status
    conn.close()
    return out


def _direct(model: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ids = model.tokenizer([TEXT], truncation=True, max_length=model.seq_len)["input_ids"]
        model.forward(model.pad(ids)).argmax(1)
        out.append(time.perf_counter() - t)
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [x for r in runs for x in r["lat"]]
    return {
        "rps": round(sum(r["requests"] for r in runs) / sum(r["seconds"] for r in runs), 1),
        "p50_ms": round(_pct(lat, 0.5) * 1000, 2),
        "p99_ms": round(_pct(lat, 0.99) * 1000, 2),
        "errors": sum(r["errors"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an export directory (default: export one)")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per round and server")
    parser.add_argument("--requests", type=int, default=200, help="batch-1 overhead, per round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from offline.serve.models import load_model
    from tests.serve.conftest import running

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        root = Path(tmp)
        model_dir = args.model or _export(root, args.backend)
        common = ["--model", str(model_dir), "--backend", args.backend]
        batched_args = [*common, "--max-batch", "32", "--max-wait-ms", "5"]
        single_args = [*common, "--max-batch", "1", "--max-wait-ms", "0"]
        direct_model = load_model(model_dir, args.backend)
        runs: dict[str, list[Any]] = {"batched": [], "single": [], "http": [], "direct": []}
        with (
            running(*batched_args, cwd=root, log=root / "batched.log") as batched,
            running(*single_args, cwd=root, log=root / "single.log") as single,
        ):
            for server in (batched, single):  # warm both up
                asyncio.run(_load(server.url, args.clients, 1.0))
            _direct(direct_model, 20)
            for _ in range(args.rounds):
                for name, server in (("batched", batched), ("single", single)):
                    runs[name].append(asyncio.run(_load(server.url, args.clients, args.seconds)))
                runs["http"] += _sequential(single.url, args.requests)
                runs["direct"] += _direct(direct_model, args.requests)
    b, s = _summary(runs["batched"]), _summary(runs["single"])
    http_p50, direct_p50 = _pct(runs["http"], 0.5), _pct(runs["direct"], 0.5)
    result = {
        "model": str(args.model or "tiny classifier, int8"),
        "backend": args.backend,
        "clients": args.clients,
        "batched": b,
        "unbatched": s,
        "throughput_ratio": round(b["rps"] / s["rps"], 2),
        "batch1_server_p50_ms": round(http_p50 * 1000, 3),
        "batch1_direct_p50_ms": round(direct_p50 * 1000, 3),
        "server_overhead": round(http_p50 / direct_p50 - 1, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"offline serve, {result['model']}, backend {args.backend}, {args.clients} clients")
    for name, r in (("micro-batched (max 32, 5 ms)", b), ("unbatched (max 1)", s)):
        print(
            f"  {name:<30} {r['rps']:>8} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
            f"  errors {r['errors']}"
        )
    print(f"  throughput, batched / unbatched: {result['throughput_ratio']}x (goal >= 3x)")
    print(
        f"  batch 1: server p50 {result['batch1_server_p50_ms']} ms, direct call p50"
        f" {result['batch1_direct_p50_ms']} ms: overhead {result['server_overhead']:.1%}"
        " (goal <= 15 %)"
    )


if __name__ == "__main__":
    main()
