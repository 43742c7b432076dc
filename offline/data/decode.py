"""Decoding dataset text files: the configured encoding, byte-order marks, and wrong encodings.

A dataset's ``encoding`` (params ``datasets.<name>.encoding``, default ``utf-8``) is any text
codec Python knows; ``utf-8`` also accepts a leading byte-order mark (Excel's "CSV UTF-8"), and
a mark decoded by any other codec is dropped too. Line ends may be LF or CRLF.

A row whose bytes do not decode is quarantined like any other bad row, but a *file* in the
wrong encoding is an error: when more than half of its rows with non-ASCII bytes do not decode
(judged after the first :data:`JUDGE_AFTER` such rows, and again at the end of the file), the
stage stops with :class:`~offline.errors.DataError` naming the file, the first bad byte and the
``encoding`` to set, before anything is written.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from offline.errors import DataError

BOM = "\ufeff"
JUDGE_AFTER = 1000
# Encodings worth suggesting when a file does not decode in the configured one.
CANDIDATES = ("utf-8", "gb18030")
_SAMPLES = 20
_SAMPLE_BYTES = 65_536


def check_encoding(name: str) -> str:
    """``name`` itself when it is a text codec Python knows; ValueError otherwise."""
    try:
        "\n".encode(name)
    except LookupError:
        raise ValueError(
            f"unknown text encoding {name!r}; use a Python codec name such as "
            "utf-8, gb18030, gbk, big5, shift_jis, cp1252 or utf-16"
        ) from None
    return name


def text_codec(encoding: str) -> str:
    """The codec that reads ``encoding``: utf-8 becomes utf-8-sig, so a leading BOM is dropped."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def open_text(path: Path, encoding: str, newline: str) -> IO[str]:
    """``path`` as streamed text; bytes that do not decode become lone surrogates (see bad_byte)."""
    return path.open("r", encoding=text_codec(encoding), errors="surrogateescape", newline=newline)


def drop_bom(line: str, lineno: int) -> str:
    """The first line without a byte-order mark (one the codec itself did not consume)."""
    return line.removeprefix(BOM) if lineno == 1 else line


def _shown(encoding: str) -> str:
    return "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding


def bad_byte(text: str, encoding: str) -> int | None:
    """Where, in ``text``'s raw bytes, the first byte that did not decode sits; None if none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return len(text[: exc.start].encode(encoding, "surrogateescape"))
    return None


def raw_bytes(text: str, encoding: str) -> bytes:
    """The bytes ``text`` was decoded from (undecodable bytes included)."""
    return text.encode(encoding, "surrogateescape")


def printable(text: str, encoding: str) -> str:
    """``text`` with its undecodable bytes written as ``\\xNN`` escapes, for the ledger."""
    if bad_byte(text, encoding) is None:
        return text
    return raw_bytes(text, encoding).decode(encoding, "backslashreplace")


def suggest(samples: list[bytes], encoding: str) -> str | None:
    """A candidate encoding every sample decodes in, other than ``encoding``; None if none."""
    tried = codecs.lookup(encoding).name
    utf16 = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    if samples and samples[0].startswith(utf16) and not tried.startswith("utf-16"):
        return "utf-16"  # Windows "Unicode" text (PowerShell's default); its BOM says so
    for candidate in CANDIDATES:
        if codecs.lookup(candidate).name == tried or not samples:
            continue
        try:
            for sample in samples:
                sample.decode(candidate)
        except UnicodeDecodeError:
            continue
        return candidate
    return None


def encoding_fix(dataset: str, encoding: str, samples: list[bytes]) -> str:
    """The fix for a file that does not decode as ``encoding``."""
    found = suggest(samples, encoding)
    if found:
        return f"it decodes as {found}: set datasets.{dataset}.encoding: {found} in params.yaml"
    return (
        f"set datasets.{dataset}.encoding in params.yaml to the file's encoding "
        "(gb18030, big5, shift_jis, cp1252, ...), or convert the file to UTF-8"
    )


@dataclass
class Decoding:
    """Counts one file's rows that do and do not decode, to tell damage from a wrong encoding."""

    label: str
    dataset: str
    encoding: str
    failed: int = 0
    decoded: int = 0
    first: str = ""
    samples: list[bytes] = field(default_factory=list)

    def check(self, text: str, lineno: int) -> str | None:
        """The quarantine reason when ``text`` (read at ``lineno``) did not decode, else None.

        Raises:
            DataError: when the rows seen so far say the file is in the wrong encoding.
        """
        offset = bad_byte(text, self.encoding)
        if offset is None:
            self.decoded += not text.isascii()
        else:
            self._failure(text, lineno, offset)
        if self.failed + self.decoded == JUDGE_AFTER:
            self.judge()
        return None if offset is None else f"invalid {_shown(self.encoding)}: at byte {offset}"

    def _failure(self, text: str, lineno: int, offset: int) -> None:
        self.failed += 1
        self.first = self.first or f"line {lineno}, byte {offset} of the line"
        raw = raw_bytes(text, self.encoding)
        if len(self.samples) < _SAMPLES and len(raw) <= _SAMPLE_BYTES:
            self.samples.append(raw)

    def judge(self) -> None:
        """Raise when more than half of the rows with non-ASCII bytes did not decode."""
        if self.failed > self.decoded:
            raise self.error()

    def error(self) -> DataError:
        """The error for this file: where it stopped decoding, and the encoding to set."""
        rows = self.failed + self.decoded
        return DataError(
            f"{self.label} is not {self.encoding} (datasets.{self.dataset}.encoding): "
            f"{self.failed} of {rows} row(s) with non-ASCII bytes do not decode, "
            f"the first at {self.first}",
            fix=encoding_fix(self.dataset, self.encoding, self.samples),
        )


def scan(path: Path, label: str, dataset: str, encoding: str) -> DataError:
    """The wrong-encoding error for a whole file a reader could not decode."""
    found = Decoding(label, dataset, encoding)
    try:
        with open_text(path, encoding, newline="\n") as fh:
            for lineno, line in enumerate(fh, 1):
                found.check(drop_bom(line, lineno), lineno)
    except (UnicodeDecodeError, DataError):
        pass
    if found.failed:
        return found.error()
    return DataError(
        f"{label} is not {encoding} (datasets.{dataset}.encoding): it does not decode",
        fix=encoding_fix(dataset, encoding, []),
    )
