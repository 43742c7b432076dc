"""Length bounds and Gopher-style quality heuristics, CJK-aware and vectorized per batch.

Both steps judge a record by its joined text (:func:`offline.data.steps.text.joined_array`).
Texts are scanned once per batch in numpy: UTF-8 decoded to code points, each classified
(space, letter, digit/mark, CJK, punctuation, other) by a table built from ``unicodedata``, so
counting words costs a few array passes instead of one regex match per word.

Two notions of "word" are used, both CJK-aware (one Han/kana character is one word):

- *word runs* (``length`` words, n-grams, mean word length): CJK characters, and runs of
  letters, digits, marks and ``_`` (Python's ``\\w+``) between them;
- *words* (symbol ratio, alphabetic fraction, the volume gates): CJK characters, and
  whitespace-separated tokens between them that are not punctuation only. "2024-05-01" is one
  word here and three word runs there.

Repetition follows Gopher (Rae et al., 2021): the share of word characters in the most frequent
n-gram (n=2..4) and in n-grams seen more than once (n=5..10). n-grams are compared by 64-bit
hashes of their word runs. Heuristics that need volume only apply to texts with enough words
(``stats_min_words``, ``repetition_min_words``), so short tickets are not judged by ratios of
three words.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from offline.config import Strict
from offline.data.records import TEXT_KINDS
from offline.data.steps.base import Context, Outcome, Step, StepSpec
from offline.data.steps.text import CJK_RANGES, joined_array, list_parts, row_ids

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
U64Array = npt.NDArray[np.uint64]
NgramSize = Annotated[int, Field(ge=1, le=32)]

# Character classes of the scan.
SPACE, LETTER, DIGIT, CJK, PUNCT, OTHER = range(6)

_SYMBOL = r"#|\.\.\.|…"
# Line patterns run on "\n" + text + "\n": count_substring_regex restarts its search after each
# match with the anchors reset, so (?m)^ and $ would count wrongly.
_LINE = r"\n[ \t]*[^\s]"
_BULLET_LINE = r"\n[ \t]*[-*•‣●○◦▪▫■□·\x{2013}\x{2014}]"
_ELLIPSIS_LINE = r"(?:\.\.\.|…)[ \t]*\n"

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _count(values: pa.Array, pattern: str) -> IntArray:
    out: IntArray = pc.count_substring_regex(values, pattern).to_numpy().astype(np.int64)
    return out


def _ratio(num: npt.NDArray[np.generic], den: npt.NDArray[np.generic]) -> FloatArray:
    out: FloatArray = np.divide(
        num, den, out=np.zeros(len(num), dtype=np.float64), where=np.asarray(den) > 0
    )
    return out


def _mix(x: U64Array) -> U64Array:
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    out: U64Array = x ^ (x >> np.uint64(31))
    return out


# ---------------------------------------------------------------------------------------------
# The character scan


def _classify(cp: int) -> int:
    """The scan class of one code point."""
    if any(lo <= cp <= hi for lo, hi in CJK_RANGES):
        return CJK
    return _CATEGORY_CLASS[_category(chr(cp))]


def _category(ch: str) -> str:
    """The major category as the scan sees it: whitespace is Z, "_" is N (as in \\w)."""
    major = unicodedata.category(ch)[0]
    if ch.isspace():
        return "Z"
    return "N" if ch == "_" else major


# Unicode major category -> scan class.
_CATEGORY_CLASS = {
    "Z": SPACE,
    "L": LETTER,
    "N": DIGIT,
    "M": DIGIT,
    "P": PUNCT,
    "S": OTHER,
    "C": OTHER,
}


@functools.cache
def _bmp_classes() -> npt.NDArray[np.uint8]:
    """The class of every code point below U+10000 (built once, read-only)."""
    table = np.array([_CATEGORY_CLASS[_category(chr(cp))] for cp in range(0x10000)], np.uint8)
    for lo, hi in CJK_RANGES:
        table[lo : min(hi, 0xFFFF) + 1] = CJK
    table.flags.writeable = False
    return table


def _decode(text: pa.Array) -> tuple[npt.NDArray[np.uint32], IntArray]:
    """The code point of every character of a (null-free) string array, and its row."""
    n = len(text)
    lengths = pc.utf8_length(text).to_numpy().astype(np.int64)
    rows: IntArray = np.repeat(np.arange(n, dtype=np.int64), lengths)
    _, offsets_buf, data_buf = text.buffers()
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=width)[text.offset : text.offset + n + 1]
    data = np.zeros(0, np.uint8) if data_buf is None else np.frombuffer(data_buf, np.uint8)
    data = data[int(offsets[0]) : int(offsets[-1])]
    if not len(data) or int(data.max()) < 0x80:
        return data.astype(np.uint32), rows
    padded = np.concatenate([data, np.zeros(3, np.uint8)]).astype(np.uint32)
    starts = np.flatnonzero((data & 0xC0) != 0x80)
    cp = padded[starts]
    multi = np.flatnonzero(cp >= 0xC0)
    at, lead = starts[multi], cp[multi]
    c1, c2, c3 = padded[at + 1] & 0x3F, padded[at + 2] & 0x3F, padded[at + 3] & 0x3F
    two = ((lead & 0x1F) << 6) | c1
    three = ((lead & 0x0F) << 12) | (c1 << 6) | c2
    four = ((lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3
    cp[multi] = np.where(lead >= 0xF0, four, np.where(lead >= 0xE0, three, two))
    return cp, rows


def _classes(cp: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint8]:
    cls: npt.NDArray[np.uint8] = _bmp_classes()[np.minimum(cp, 0xFFFF)]
    astral = np.flatnonzero(cp > 0xFFFF)
    if len(astral):
        values, inverse = np.unique(cp[astral], return_inverse=True)
        cls[astral] = np.array([_classify(int(v)) for v in values], np.uint8)[inverse]
    return cls


@dataclass
class _Tokens:
    """Word runs of a batch in text order: row, length and hash of each, word chars per row."""

    rows: IntArray
    lengths: IntArray
    hashes: U64Array
    chars: FloatArray

    def subset(self, rows: BoolArray) -> _Tokens:
        keep = rows[self.rows]
        return _Tokens(self.rows[keep], self.lengths[keep], self.hashes[keep], self.chars)


@dataclass
class _Scan:
    """Every character of a batch's texts: its code point, class and row."""

    cp: npt.NDArray[np.uint32]
    cls: npt.NDArray[np.uint8]
    rows: IntArray
    n_rows: int

    @classmethod
    def of(cls, text: pa.Array) -> _Scan:
        cp, rows = _decode(text)
        return cls(cp, _classes(cp), rows, len(text))

    def per_row(self, flags: BoolArray) -> IntArray:
        """How many flagged characters each row has."""
        out: IntArray = np.bincount(self.rows[flags], minlength=self.n_rows)
        return out

    def starts(self, member: BoolArray, single: BoolArray) -> BoolArray:
        """Token starts: each maximal run of ``member`` chars in a row, each ``single`` char."""
        prev = np.zeros_like(member)
        prev[1:] = member[:-1] & (self.rows[1:] == self.rows[:-1])
        out: BoolArray = single | (member & ~prev)
        return out

    def latin(self) -> BoolArray:
        out: BoolArray = (self.cls == LETTER) | (self.cls == DIGIT)
        return out

    def word_runs(self) -> BoolArray:
        """Where each word run starts (CJK characters are runs of their own)."""
        return self.starts(self.latin(), self.cls == CJK)

    def words(self) -> tuple[IntArray, IntArray]:
        """Per row: words (tokens not all punctuation), and those holding a letter."""
        cjk = self.cls == CJK
        member = (self.cls != SPACE) & ~cjk
        starts = self.starts(member, cjk)
        inside = np.flatnonzero(member | cjk)
        token = np.cumsum(starts)[inside] - 1
        n_tokens = int(starts.sum())
        kind = self.cls[inside]
        wordy = np.bincount(token, kind != PUNCT, minlength=n_tokens) > 0
        letter = np.bincount(token, (kind == LETTER) | (kind == CJK), minlength=n_tokens) > 0
        token_rows = self.rows[starts]
        words = np.bincount(token_rows, wordy, minlength=self.n_rows).astype(np.int64)
        alpha = np.bincount(token_rows, wordy & letter, minlength=self.n_rows).astype(np.int64)
        return words, alpha

    def tokens(self) -> _Tokens:
        """The word runs, hashed: a polynomial over the code points, then mixed."""
        starts = self.word_runs()
        inside = np.flatnonzero(self.latin() | (self.cls == CJK))
        first = np.flatnonzero(starts[inside])
        if not len(first):
            empty = np.zeros(0, np.int64)
            return _Tokens(empty, empty, empty.astype(np.uint64), np.zeros(self.n_rows))
        pos = np.arange(len(inside)) - first[np.cumsum(starts[inside]) - 1]
        powers = np.cumprod(np.full(int(pos.max()) + 1, _GOLDEN, dtype=np.uint64))
        terms = _mix(self.cp[inside].astype(np.uint64)) * powers[pos]
        hashes = _mix(np.add.reduceat(terms, first))
        lengths = np.diff(np.append(first, len(inside))).astype(np.int64)
        rows = self.rows[inside[first]]
        chars = np.bincount(rows, lengths, minlength=self.n_rows).astype(np.float64)
        return _Tokens(rows, lengths, hashes, chars)


# ---------------------------------------------------------------------------------------------
# length


class LengthParams(Strict):
    """Bounds on the joined text of a record; null turns a bound off."""

    min_chars: int | None = Field(6, ge=0)
    """Characters; low because CJK tickets are short ("退款什么时候到账" is 8)."""
    max_chars: int | None = Field(100_000, ge=0)
    min_words: int | None = Field(3, ge=0)
    """Words: each CJK character is one, Latin words are \\w+ runs."""
    max_words: int | None = Field(None, ge=0)
    min_cjk_chars: int | None = Field(None, ge=0)
    max_cjk_chars: int | None = Field(None, ge=0)


def _lengths(values: pa.Array) -> IntArray:
    out: IntArray = pc.utf8_length(values).to_numpy().astype(np.int64)
    return out


def _bounds(values: IntArray, low: int | None, high: int | None) -> list[tuple[BoolArray, str]]:
    """(failed rows, "too short: {} < limit" template) for each bound that is set."""
    out: list[tuple[BoolArray, str]] = []
    if low is not None:
        out.append((values < low, f"too short: {{}} {{}} < {low}"))
    if high is not None:
        out.append((values > high, f"too long: {{}} {{}} > {high}"))
    return out


class _Length:
    name = "length"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(self, params: LengthParams) -> None:
        self.p = params

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        p, text = self.p, joined_array(batch)
        measures: list[tuple[IntArray, int | None, int | None, str]] = [
            (_lengths(text), p.min_chars, p.max_chars, "chars")
        ]
        if {p.min_words, p.max_words, p.min_cjk_chars, p.max_cjk_chars} != {None}:
            scan = _Scan.of(text)
            measures += [
                (scan.per_row(scan.word_runs()), p.min_words, p.max_words, "words"),
                (scan.per_row(scan.cls == CJK), p.min_cjk_chars, p.max_cjk_chars, "CJK chars"),
            ]
        reasons: list[str | None] = [None] * batch.num_rows
        for values, low, high, unit in measures:
            for failed, template in _bounds(values, low, high):
                for row in np.flatnonzero(failed).tolist():
                    if reasons[row] is None:
                        reasons[row] = template.format(values[row], unit)
        return Outcome(batch, reasons)

    def close(self) -> dict[str, int]:
        return {}


def length(params: LengthParams, ctx: Context) -> Step:
    """Build the ``length`` step: min/max characters, words and CJK characters.

    The reason names the measure and the limit, e.g. "too short: 3 words < 5".
    """
    return _Length(params)


# ---------------------------------------------------------------------------------------------
# quality


class QualityParams(Strict):
    """Gopher-style thresholds (Rae et al., 2021), loosened for short bilingual support text.

    Gopher's repetition limits (top n-gram 0.20/0.18/0.16, duplicate n-grams 0.15..0.10) suit
    web pages of hundreds of words; a 60-word ticket that names its product three times, or a
    Chinese one read character by character, passes them. Measured on ``offline data sample``
    tickets and chats, ordinary text stays below 0.30 (top 2-gram), 0.40 (top 4-gram) and 0.46
    (duplicate 5-gram) while repeated spam measures 0.5-2.0 and 0.9-1.0, so the limits sit in
    between. The ratio limits are Gopher's. Every threshold can be set to null (or an n removed
    from a map) to turn that check off.
    """

    stats_min_words: int = Field(20, ge=0)
    """Ratio checks (lines, symbols, word length, bullets, ellipses, alphabetic) only from this
    many words; shorter texts skip them."""
    repetition_min_words: int = Field(50, ge=0)
    """n-gram repetition checks only from this many words."""
    max_dup_line_frac: float | None = Field(0.3, ge=0)
    """Share of non-empty lines that repeat an earlier line."""
    max_dup_line_char_frac: float | None = Field(0.2, ge=0)
    """Share of characters in lines that repeat an earlier line."""
    max_top_ngram_char_frac: dict[NgramSize, float] = Field(
        default_factory=lambda: {2: 0.35, 3: 0.45, 4: 0.5}
    )
    """n -> limit on the share of word characters in the most frequent repeated n-gram."""
    max_dup_ngram_char_frac: dict[NgramSize, float] = Field(
        default_factory=lambda: {5: 0.6, 6: 0.58, 7: 0.56, 8: 0.54, 9: 0.52, 10: 0.5}
    )
    """n -> limit on the share of word characters inside n-grams that occur more than once."""
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)
    """(# + ... + …) per word."""
    min_mean_word_length: float | None = Field(3.0, ge=0)
    """Mean Latin word length; skipped for CJK-dominant text."""
    max_mean_word_length: float | None = Field(10.0, ge=0)
    max_bullet_lines_frac: float | None = Field(0.9, ge=0)
    """Share of lines starting with a bullet (- * • ...)."""
    max_ellipsis_lines_frac: float | None = Field(0.3, ge=0)
    """Share of lines ending with ... or …"""
    min_alpha_words_frac: float | None = Field(0.8, ge=0)
    """Share of words holding a letter (CJK characters count as letters)."""


@dataclass
class _Check:
    key: str
    label: str
    values: FloatArray
    limit: float
    is_max: bool
    digits: int = 3

    def failed(self) -> BoolArray:
        with np.errstate(invalid="ignore"):
            bad = self.values > self.limit if self.is_max else self.values < self.limit
        return np.asarray(bad & ~np.isnan(self.values))

    def reason(self, row: int) -> str:
        sign = ">" if self.is_max else "<"
        value = f"{self.values[row]:.{self.digits}f}"
        return f"{self.label}: {value} {sign} {self.limit:g}"


def _scatter(n: int, rows: IntArray, values: FloatArray) -> FloatArray:
    out = np.full(n, np.nan)
    out[rows] = values
    return out


def _repeats(sorted_values: U64Array) -> tuple[IntArray, IntArray]:
    """Index of the first of each run of equal values in a sorted array, and the run length."""
    if not len(sorted_values):
        empty = np.zeros(0, np.int64)
        return empty, empty
    new = np.ones(len(sorted_values), dtype=np.bool_)
    new[1:] = sorted_values[1:] != sorted_values[:-1]
    first = np.flatnonzero(new)
    return first, np.diff(np.append(first, len(sorted_values)))


@dataclass
class _Grams:
    """The n-gram windows of a token sequence that stay inside one text."""

    starts: IntArray
    rows: U64Array
    hashes: U64Array
    chars: IntArray
    row_bits: int

    def packed(self, payload_bits: int) -> U64Array:
        """row | top hash bits | payload slot: sorting groups equal n-grams of a row together."""
        keep = 64 - self.row_bits - payload_bits
        row_part = self.rows << np.uint64(64 - self.row_bits)
        hash_part = (self.hashes >> np.uint64(64 - keep)) << np.uint64(payload_bits)
        out: U64Array = row_part | hash_part
        return out


def _ngrams(tok: _Tokens, max_n: int, wanted: set[int]) -> dict[int, _Grams]:
    """Hashes of every n-gram for n in ``wanted``, built up one token at a time."""
    total = len(tok.rows)
    cum = np.concatenate([[0], np.cumsum(tok.lengths)])
    row_bits = max(1, (int(tok.rows.max(initial=0)) + 1).bit_length())
    rows64 = tok.rows.astype(np.uint64)
    grams: dict[int, _Grams] = {}
    hashes = tok.hashes
    for n in range(1, min(max_n, total) + 1):
        if n > 1:
            hashes = _mix(hashes[:-1] * _GOLDEN + tok.hashes[n - 1 :])
        if n not in wanted:
            continue
        starts = np.flatnonzero(tok.rows[: total - n + 1] == tok.rows[n - 1 :])
        chars = cum[starts + n] - cum[starts]
        grams[n] = _Grams(starts, rows64[starts], hashes[starts], chars, row_bits)
    return grams


def _top_ngram_frac(grams: _Grams, chars: FloatArray) -> FloatArray:
    """Per row: characters of its most frequent repeated n-gram (ties: the longest) / chars."""
    values = np.sort(grams.packed(12) | np.minimum(grams.chars, 4095).astype(np.uint64))
    first, counts = _repeats(values)
    repeated = counts >= 2
    heads, counts = values[first[repeated]], counts[repeated]
    rows = (heads >> np.uint64(64 - grams.row_bits)).astype(np.int64)
    score = (counts << 12) | (heads & np.uint64(4095)).astype(np.int64)
    best = np.zeros(len(chars), dtype=np.int64)
    np.maximum.at(best, rows, score)
    return _ratio((best >> 12) * (best & 4095), chars)


def _rows_with_repeats(grams: _Grams, n_rows: int) -> BoolArray:
    values = np.sort(grams.packed(0))
    first, counts = _repeats(values)
    rows = (values[first[counts >= 2]] >> np.uint64(64 - grams.row_bits)).astype(np.int64)
    out = np.zeros(n_rows, dtype=np.bool_)
    out[rows] = True
    return out


def _dup_ngram_frac(grams: _Grams, n: int, tok: _Tokens) -> FloatArray:
    """Per row: word characters covered by n-grams that occur more than once / chars."""
    _, inverse, counts = np.unique(grams.packed(0), return_inverse=True, return_counts=True)
    starts = grams.starts[counts[inverse] >= 2]
    total = len(tok.rows)
    # Union of the windows of repeated n-grams: +1 at each start, -1 past each end.
    edges = np.bincount(starts, minlength=total + 1) - np.bincount(starts + n, minlength=total + 1)
    covered = np.cumsum(edges)[:total] > 0
    dup = np.bincount(tok.rows[covered], tok.lengths[covered], minlength=len(tok.chars))
    return _ratio(dup, tok.chars)


def _dup_lines(texts: pa.Array) -> tuple[FloatArray, FloatArray]:
    """Per text: share of non-empty lines, and of characters, that repeat an earlier line."""
    offsets, parts = list_parts(pc.split_pattern(texts, "\n"))
    lines = pc.utf8_trim_whitespace(parts)
    lengths: IntArray = pc.utf8_length(lines).to_numpy().astype(np.int64)
    keep = lengths > 0
    rows = row_ids(offsets)[keep]
    line_ids: IntArray = (
        pc.dictionary_encode(lines.filter(pa.array(keep))).indices.to_numpy().astype(np.int64)
    )
    _, first = np.unique(rows * (len(rows) + 1) + line_ids, return_index=True)
    dup = np.ones(len(rows), dtype=np.bool_)
    dup[first] = False
    n = len(texts)
    n_lines = np.bincount(rows, minlength=n)
    dup_lines = np.bincount(rows[dup], minlength=n)
    dup_chars = np.bincount(rows[dup], lengths[keep][dup], minlength=n)
    total_chars: IntArray = pc.utf8_length(texts).to_numpy().astype(np.int64)
    return _ratio(dup_lines, n_lines), _ratio(dup_chars, total_chars)


class _Quality:
    name = "quality"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(self, params: QualityParams) -> None:
        self.p = params

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        text = joined_array(batch)
        scan = _Scan.of(text)
        words, alpha = scan.words()
        checks = self._stat_checks(text, scan, words, alpha) + self._repetition_checks(scan, words)
        reasons: list[str | None] = [None] * batch.num_rows
        counts: dict[str, int] = {}
        for check in checks:
            for row in np.flatnonzero(check.failed()).tolist():
                if reasons[row] is None:
                    reasons[row] = check.reason(row)
                    counts[check.key] = counts.get(check.key, 0) + 1
        return Outcome(batch, reasons, counts)

    def _stat_checks(
        self, text: pa.Array, scan: _Scan, words: IntArray, alpha: IntArray
    ) -> list[_Check]:
        p = self.p
        gate = words >= p.stats_min_words
        if not gate.any():
            return []
        framed = pc.binary_join_element_wise("\n", text, "\n", "")
        lines = _count(framed, _LINE)
        checks: list[_Check] = []

        def add(key: str, label: str, value: FloatArray, limit: float | None, is_max: bool) -> None:
            if limit is not None:
                checks.append(_Check(key, label, np.where(gate, value, np.nan), limit, is_max))

        if p.max_dup_line_frac is not None or p.max_dup_line_char_frac is not None:
            line_frac, char_frac = self._dup_lines(text, gate & (lines >= 2))
            add("dup_lines", "duplicate lines", line_frac, p.max_dup_line_frac, True)
            add("dup_line_chars", "duplicate-line chars", char_frac, p.max_dup_line_char_frac, True)
        symbols = _ratio(_count(text, _SYMBOL), words)
        add("symbols", "symbol/word ratio", symbols, p.max_symbol_word_ratio, True)
        mean = self._mean_word_length(scan)
        add("short_words", "mean word length", mean, p.min_mean_word_length, False)
        add("long_words", "mean word length", mean, p.max_mean_word_length, True)
        bullets = _ratio(_count(framed, _BULLET_LINE), lines)
        add("bullets", "bullet lines", bullets, p.max_bullet_lines_frac, True)
        ellipsis = _ratio(_count(framed, _ELLIPSIS_LINE), lines)
        add("ellipsis", "ellipsis lines", ellipsis, p.max_ellipsis_lines_frac, True)
        add("alpha", "alphabetic words", _ratio(alpha, words), p.min_alpha_words_frac, False)
        return checks

    @staticmethod
    def _dup_lines(text: pa.Array, which: BoolArray) -> tuple[FloatArray, FloatArray]:
        rows = np.flatnonzero(which)
        line_frac, char_frac = np.zeros(len(text)), np.zeros(len(text))
        if len(rows):
            sub_lines, sub_chars = _dup_lines(text.take(pa.array(rows)))
            line_frac[rows], char_frac[rows] = sub_lines, sub_chars
        return line_frac, char_frac

    def _mean_word_length(self, scan: _Scan) -> FloatArray:
        latin = scan.latin()
        runs = scan.per_row(scan.starts(latin, np.zeros_like(latin)))
        chars = scan.per_row(latin)
        mean = _ratio(chars, runs)
        # Too few Latin words, or mostly CJK: the Latin mean says nothing about the text.
        mean[(runs < self.p.stats_min_words) | (scan.per_row(scan.cls == CJK) >= chars)] = np.nan
        return mean

    def _repetition_checks(self, scan: _Scan, words: IntArray) -> list[_Check]:
        top, dup = self.p.max_top_ngram_char_frac, self.p.max_dup_ngram_char_frac
        gate = words >= self.p.repetition_min_words
        if not gate.any() or not (top or dup):
            return []
        tok = scan.tokens().subset(gate)
        # A repeated n-gram repeats its first n0 words too (n0: the smallest duplicate n
        # checked), so only texts with a repeated n0-gram need the exact, costlier coverage.
        n0 = min(dup, default=0)
        wanted = set(top) | ({n0} if dup else set())
        grams = _ngrams(tok, max(wanted), wanted)
        checks: list[_Check] = []

        def add(key: str, label: str, value: FloatArray, limit: float) -> None:
            checks.append(_Check(key, label, np.where(gate, value, np.nan), limit, True))

        zeros = np.zeros(len(words))
        for n, limit in sorted(top.items()):
            frac = _top_ngram_frac(grams[n], tok.chars) if n in grams else zeros
            add(f"top_{n}gram", f"top {n}-gram chars", frac, limit)
        if dup:
            suspects = _rows_with_repeats(grams[n0], len(words)) if n0 in grams else zeros > 0
            sub = tok.subset(suspects)
            dup_grams = _ngrams(sub, max(dup), set(dup))
            for n, limit in sorted(dup.items()):
                frac = _dup_ngram_frac(dup_grams[n], n, sub) if n in dup_grams else zeros
                add(f"dup_{n}gram", f"duplicate {n}-gram chars", frac, limit)
        return checks

    def close(self) -> dict[str, int]:
        return {}


def quality(params: QualityParams, ctx: Context) -> Step:
    """Build the ``quality`` step: Gopher-style repetition and ratio heuristics, CJK-aware.

    A rejected row's reason names the first failing heuristic and its measured value, e.g.
    "top 2-gram chars: 0.980 > 0.35". ``counts`` tallies rejections per heuristic.
    """
    return _Quality(params)


STEPS = (
    StepSpec("length", LengthParams, length, order=50),
    StepSpec("quality", QualityParams, quality, order=60),
)
