#!/usr/bin/env python3
"""Run an exported TVM artifact on an edge device: TVM runtime, numpy, tokenizers and jinja2.

    python3 run_edge.py --text "where is my parcel?"          # one prediction, as JSON
    python3 run_edge.py --serve 8080                          # POST /predict {"texts": [...]}
    python3 run_edge.py --self-test                           # this device vs the export host
    python3 run_edge.py --chat                                # a causal LM: chat on stdin
    python3 run_edge.py --serve 8080 --api-key-file KEY       # a causal LM: POST
                                                              #   /v1/chat/completions

Reads export_card.json beside it for the sequence length, the kind of model and its labels,
and loads the first TVM library of this machine's architecture. A causal LM exported with a
decoder generates with its KV cache and the model's own chat template.
"""

from __future__ import annotations

import argparse
import hmac
import json
import platform
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import artifact  # noqa: E402 -- shipped beside this file: reads and verifies the export

ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine())


class Model:
    def __init__(self, directory: Path) -> None:
        import numpy as np
        import tvm
        from tokenizers import Tokenizer
        from tvm import relax

        self.np = np
        self.tvm = tvm
        try:
            self.card = artifact.read_card(directory)
            libs = [
                a for a in self.card["artifacts"] if a["format"] == "tvm" and a["target"] == ARCH
            ]
            if not libs:
                sys.exit(
                    f"error: no TVM artifact for {ARCH} in {directory}; export --target {ARCH}"
                )
            self.library_path = libs[0]["path"]
            # every file against manifest.json before anything is loaded
            artifact.verify(
                directory, [artifact.CARD, self.library_path, "tokenizer/tokenizer.json"]
            )
        except Exception as exc:  # the artifact module's errors: say them, no traceback
            sys.exit(f"error: {exc}")
        library = tvm.runtime.load_module(str(directory / self.library_path))
        self.vm = relax.VirtualMachine(library, tvm.cpu())
        self.tok = Tokenizer.from_file(str(directory / "tokenizer" / "tokenizer.json"))
        # the saved file can carry the export's fixed-length padding: lengths are counted here
        self.tok.no_padding()
        self.tok.no_truncation()
        self.seq_len = int(self.card["seq_len"])
        self.pad = int(self.card.get("pad_token_id") or 0)
        decoders = [
            a
            for a in self.card["artifacts"]
            if a["format"] == "tvm" and a["target"] == ARCH and a.get("decoder")
        ]
        self.decoder: Decoder | None = None
        if decoders:
            try:
                artifact.verify(directory, [decoders[0]["path"]])
            except Exception as exc:
                sys.exit(f"error: {exc}")
            self.decoder = Decoder(directory, decoders[0], self.card)

    def logits(self, row: object) -> object:
        out = self.vm["main"](self.tvm.runtime.tensor(row))
        return (out[0] if not hasattr(out, "numpy") else out).numpy()[0]

    def self_test(self, directory: Path, min_agreement: float) -> dict[str, object]:
        """Run the rows of parity_sample.npz (the export host's eager fp32 answers) here."""
        np = self.np
        sample = np.load(directory / "parity_sample.npz")
        agree = total = 0
        diff = 0.0
        for i, length in enumerate(sample["lengths"]):
            logits = self.logits(sample["ids"][i : i + 1])
            if self.card["kind"] == "sequence-classification":
                agree += int(logits.argmax() == sample["top1"][i])
                total += 1
                answer = logits
            else:
                real = max(int(length) - 1, 1)
                agree += int((logits[:real].argmax(-1) == sample["top1"][i][:real]).sum())
                total += real
                answer = logits[max(int(length) - 1, 0)]
            diff = max(diff, float(np.abs(answer - sample["logits"][i]).max()))
        agreement = agree / max(total, 1)
        report: dict[str, object] = {
            "machine": ARCH,
            "artifact": self.library_path,
            "rows": len(sample["lengths"]),
            "top1_agreement": round(agreement, 4),
            "max_abs_diff": diff,
            "pass": agreement >= min_agreement,
        }
        if self.decoder is not None and "gen_prompts" in sample:
            generated = self.decoder.agreement(sample["gen_prompts"], sample["gen_tokens"])
            report["decoder"] = self.decoder.path
            report["generated_top1_agreement"] = round(generated, 4)
            report["pass"] = bool(report["pass"]) and generated >= min_agreement
        return report

    def predict(self, text: str) -> dict[str, object]:
        ids = self.tok.encode(text).ids[: self.seq_len]
        length = len(ids)
        row = self.np.full((1, self.seq_len), self.pad, dtype="int64")
        row[0, :length] = ids
        logits = self.logits(row)
        if self.card["kind"] == "sequence-classification":
            labels = self.card.get("labels") or []
            best = int(logits.argmax())
            return {
                "label": labels[best] if best < len(labels) else best,
                "scores": logits.tolist(),
            }
        token = int(logits[max(length - 1, 0)].argmax())
        return {"next_token": self.tok.id_to_token(token), "next_token_id": token}


class Decoder:
    """Generation with the decoder library's KV cache: one array per layer for keys and one
    for values, written in place; the library reads them without a copy."""

    def __init__(self, directory: Path, art: dict[str, object], card: dict[str, object]) -> None:
        import numpy as np

        self.np = np
        self.path = str(art["path"])
        info = art["decoder"]
        assert isinstance(info, dict)
        self.columns, self.chunk = int(info["columns"]), int(info["chunk"])
        self.shapes = [list(map(int, s)) for s in info["cache"]]
        self.lib = artifact.TvmDecoder(directory / self.path, self.chunk)
        generation = card.get("generation") or {}
        assert isinstance(generation, dict)
        self.stop_ids = {int(i) for i in generation.get("stop_ids", [])}
        self.max_context = self.columns - 1

    def _zeros(self, shape: tuple[int, ...], dtype: str) -> object:
        """A numpy array on a 64-byte boundary: TVM takes nothing less without a copy."""
        np = self.np
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = np.zeros(size + 64, "uint8")
        offset = -raw.ctypes.data % 64
        return raw[offset : offset + size].view(dtype).reshape(shape)

    def _empty(self) -> list[object]:
        past = []
        for kh, kd, vh, vd in self.shapes:
            past += [self._zeros((1, kh, self.columns, kd), "float32")]
            past += [self._zeros((1, vh, self.columns, vd), "float32")]
        return past

    def _read(self, past: list[object], pos: int, tokens: list[int]) -> object:
        """``tokens`` into the cache from ``pos``; the logits after the last of them."""
        np = self.np
        logits = None
        while tokens:
            count = min(self.chunk, len(tokens))
            width = 1 if count == 1 else self.chunk
            ids, start, pads = (self._zeros(s, "int64") for s in ((1, width), (1,), (1,)))
            ids[0, width - count :] = tokens[:count]  # type: ignore[index]
            start[0], pads[0] = pos, width - count  # type: ignore[index]
            out = self.lib(ids, start, pads, past)
            for cache, new in zip(past, out[1:], strict=True):
                cache[:, :, pos : pos + count] = np.from_dlpack(new)[:, :, width - count :]  # type: ignore[index]
            logits = np.from_dlpack(out[0])[0].copy()
            pos, tokens = pos + count, tokens[count:]
        return logits

    def generate(
        self, prompt: list[int], max_tokens: int, temperature: float = 0.0, seed: int | None = None
    ) -> tuple[list[int], str]:
        """Up to ``max_tokens`` tokens after ``prompt``, and why it stopped."""
        np = self.np
        if len(prompt) >= self.max_context:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens; this model holds {self.max_context}"
            )
        rng = np.random.default_rng(seed)
        past = self._empty()
        logits = self._read(past, 0, list(prompt))
        pos, out = len(prompt), []
        while True:
            if temperature > 0:
                z = (logits - logits.max()) / temperature  # type: ignore[operator]
                p = np.exp(z)
                token = int(rng.choice(len(p), p=p / p.sum()))
            else:
                token = int(logits.argmax())  # type: ignore[attr-defined]
            if token in self.stop_ids:
                return out, "stop"
            out.append(token)
            if len(out) >= max_tokens or pos + 1 >= self.max_context:
                return out, "length"
            logits = self._read(past, pos, [token])
            pos += 1

    def agreement(self, prompts: object, continuations: object) -> float:
        """How often the greedy next token here is the export host's eager one, along the
        host's own greedy continuations (each step fed the host's token)."""
        agree = total = 0
        for row, following in zip(prompts, continuations, strict=True):  # type: ignore[call-overload]
            prompt = [int(t) for t in row if t >= 0]
            past = self._empty()
            logits = self._read(past, 0, prompt)
            pos = len(prompt)
            for i, expected in enumerate(following):
                agree += int(int(logits.argmax()) == int(expected))  # type: ignore[attr-defined]
                total += 1
                if i + 1 < len(following):
                    logits = self._read(past, pos, [int(expected)])
                    pos += 1
        return agree / max(total, 1)


class Chat:
    """Conversations rendered with the model's own chat template (jinja2, as transformers
    renders it) and generated by the decoder."""

    def __init__(self, model: Model, directory: Path) -> None:
        if model.decoder is None:
            sys.exit(
                "error: this export has no decoder for chat; export the causal LM with"
                f" --format tvm --target {ARCH} (offline export writes a decoder for it)"
            )
        self.model, self.decoder = model, model.decoder
        config = json.loads((directory / "tokenizer" / "tokenizer_config.json").read_text())
        template_file = directory / "tokenizer" / "chat_template.jinja"
        source = (
            template_file.read_text() if template_file.is_file() else config.get("chat_template")
        )
        if not source:
            sys.exit("error: the tokenizer has no chat template; use --text for raw text")
        try:
            from jinja2 import ext, nodes
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            sys.exit("error: --chat needs jinja2; install the runtime-requirements.txt beside me")

        class Generation(ext.Extension):  # type: ignore[misc]
            """``{% generation %}`` marks the assistant's part for training masks; rendering
            keeps what it holds, as transformers does."""

            tags: ClassVar[set[str]] = {"generation"}

            def parse(self, parser: object) -> object:
                lineno = next(parser.stream).lineno  # type: ignore[attr-defined]
                body = parser.parse_statements(["name:endgeneration"], drop_needle=True)  # type: ignore[attr-defined]
                return nodes.Scope(body, lineno=lineno)

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[Generation, ext.loopcontrols]
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
        env.filters["tojson"] = lambda v, **kw: json.dumps(v, ensure_ascii=False, **kw)
        self.template = env.from_string(source)
        self.specials = {
            k: (v if isinstance(v, str) else (v or {}).get("content", ""))
            for k, v in config.items()
            if k in ("bos_token", "eos_token", "pad_token", "unk_token")
        }

    def reply(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0
    ) -> dict[str, object]:
        text = self.template.render(messages=messages, add_generation_prompt=True, **self.specials)
        prompt = self.model.tok.encode(text, add_special_tokens=False).ids
        began = time.perf_counter()
        tokens, finish = self.decoder.generate(prompt, max_tokens, temperature)
        return {
            "text": self.model.tok.decode(tokens, skip_special_tokens=True),
            "finish_reason": finish,
            "prompt_tokens": len(prompt),
            "completion_tokens": len(tokens),
            "seconds": round(time.perf_counter() - began, 3),
        }


def chat_loop(chat: Chat, max_tokens: int) -> None:
    """One user turn per line of stdin; each reply printed as one JSON line."""
    messages: list[dict[str, str]] = []
    for line in sys.stdin:
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        answer = chat.reply(messages, max_tokens)
        messages.append({"role": "assistant", "content": str(answer["text"])})
        print(json.dumps(answer, ensure_ascii=False), flush=True)


def serve(model: Model, port: int, bind: str, api_key: str | None, chat: Chat | None) -> None:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if api_key is not None:
                given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if not hmac.compare_digest(given.encode(), api_key.encode()):
                    self._send(401, {"error": {"message": "a valid API key is required"}})
                    return
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                if self.path == "/predict":
                    texts = body.get("texts", [])
                    self._send(200, {"predictions": [model.predict(str(t)) for t in texts]})
                elif self.path == "/v1/chat/completions" and chat is not None:
                    self._send(200, completion(chat, body))
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
            except (ValueError, TypeError, KeyError) as exc:
                self._send(400, {"error": {"message": str(exc)}})

    ThreadingHTTPServer((bind, port), Handler).serve_forever()


def completion(chat: Chat, body: dict[str, object]) -> dict[str, object]:
    """The OpenAI chat completion subset: messages, max_tokens, temperature; no streaming."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: a non-empty list of {role, content} is required")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError("messages: each needs a role and a string content")
    if body.get("stream"):
        raise ValueError("stream: this edge server answers whole replies only")
    wanted = body.get("max_tokens", body.get("max_completion_tokens", 256))
    temperature = body.get("temperature", 0.0)
    if not isinstance(wanted, int) or not 1 <= wanted <= chat.decoder.max_context:
        raise ValueError(f"max_tokens: an integer from 1 to {chat.decoder.max_context}")
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise ValueError("temperature: a number from 0 to 2")
    answer = chat.reply(messages, wanted, float(temperature))
    return {
        "id": f"chatcmpl-edge-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.decoder.path,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer["text"]},
                "finish_reason": answer["finish_reason"],
            }
        ],
        "usage": {
            "prompt_tokens": answer["prompt_tokens"],
            "completion_tokens": answer["completion_tokens"],
            "total_tokens": int(answer["prompt_tokens"]) + int(answer["completion_tokens"]),  # type: ignore[call-overload]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=HERE)
    parser.add_argument("--text", action="append", default=[])
    parser.add_argument("--serve", type=int, metavar="PORT")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="run parity_sample.npz and compare with the export host's eager fp32 answers",
    )
    parser.add_argument("--min-agreement", type=float, default=0.9)
    parser.add_argument("--chat", action="store_true", help="a causal LM: one user turn a line")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--api-key-file", type=Path, help="--serve: require this key (Authorization: Bearer)"
    )
    args = parser.parse_args()
    model = Model(args.dir)
    if args.self_test:
        report = model.self_test(args.dir, args.min_agreement)
        print(json.dumps(report))
        sys.exit(0 if report["pass"] else 1)
    if args.chat:
        chat_loop(Chat(model, args.dir), args.max_tokens)
        return
    if args.serve:
        key = args.api_key_file.read_text().strip() if args.api_key_file else None
        if args.bind not in ("127.0.0.1", "localhost", "::1") and key is None:
            print("warning: serving beyond this machine with no --api-key-file", file=sys.stderr)
        chat = Chat(model, args.dir) if model.decoder is not None else None
        serve(model, args.serve, args.bind, key, chat)
        return
    print(json.dumps([model.predict(t) for t in args.text], ensure_ascii=False))


if __name__ == "__main__":
    main()
