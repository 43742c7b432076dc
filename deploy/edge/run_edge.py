#!/usr/bin/env python3
"""Run an exported TVM artifact on an edge device: TVM runtime, numpy and tokenizers only.

    python3 run_edge.py --text "where is my parcel?"          # one prediction, as JSON
    python3 run_edge.py --serve 8080                          # POST /predict {"texts": [...]}
    python3 run_edge.py --self-test                           # this device vs the export host

Reads export_card.json beside it for the sequence length, the kind of model and its labels,
and loads the first TVM library of this machine's architecture.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
        self.seq_len = int(self.card["seq_len"])
        self.pad = int(self.card.get("pad_token_id") or 0)

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
        return {
            "machine": ARCH,
            "artifact": self.library_path,
            "rows": len(sample["lengths"]),
            "top1_agreement": round(agreement, 4),
            "max_abs_diff": diff,
            "pass": agreement >= min_agreement,
        }

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


def serve(model: Model, port: int, bind: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/predict":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            result = [model.predict(t) for t in body.get("texts", [])]
            data = json.dumps({"predictions": result}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer((bind, port), Handler).serve_forever()


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
    args = parser.parse_args()
    model = Model(args.dir)
    if args.self_test:
        report = model.self_test(args.dir, args.min_agreement)
        print(json.dumps(report))
        sys.exit(0 if report["pass"] else 1)
    if args.serve:
        serve(model, args.serve, args.bind)
        return
    print(json.dumps([model.predict(t) for t in args.text], ensure_ascii=False))


if __name__ == "__main__":
    main()
