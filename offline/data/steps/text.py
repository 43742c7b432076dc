"""Text rewriting steps: Unicode normalization, markup stripping, user regex rules.

All three rewrite every text value of a record (``text``; ``system``/``instruction``/``response``;
each message's ``content``) with vectorized pyarrow.compute kernels over whole columns. Patterns
are RE2 (the engine behind pyarrow.compute): Perl-like, no lookaround and no backreferences, and
``\\w``/``\\d``/``\\s`` are ASCII-only, so Unicode classes are spelled ``\\pL``, ``\\p{Han}``...

The helpers :func:`joined_array`, :func:`changed_rows` and :func:`list_parts` are shared with
:mod:`offline.data.steps.quality` and :mod:`offline.data.steps.conversation`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, StringConstraints

from offline.config import Strict
from offline.data.records import TEXT_COLUMNS, TEXT_KINDS, kind_of, map_text, map_text_arrays
from offline.data.steps.base import Context, Outcome, Step, StepSpec
from offline.errors import ConfigError

Rewrite = Callable[[pa.Array], pa.Array]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# Scripts written without spaces between words, where one character is one word: Han (CJK
# unified ideographs, extensions A-G, compatibility ideographs) and Japanese kana. Hangul is
# space-separated, so it counts like Latin. Literal characters, so RE2 and Python re both read it.
CJK_RANGES = (
    (0x3040, 0x30FF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3134F),
)
CJK_CHARS = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in CJK_RANGES)
CJK = f"[{CJK_CHARS}]"


# ---------------------------------------------------------------------------------------------
# Shared column helpers


def list_parts(col: pa.ListArray) -> tuple[IntArray, pa.Array]:
    """A list column's offsets (starting at 0) and the child values they index, slicing applied."""
    raw: IntArray = col.offsets.to_numpy().astype(np.int64)
    start, end = int(raw[0]), int(raw[-1])
    return raw - start, col.values.slice(start, end - start)


def row_ids(offsets: IntArray) -> IntArray:
    """For each child value, the index of the list (row) that holds it."""
    ids: IntArray = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    return ids


def _join_lists(offsets: IntArray, values: pa.Array, keep: BoolArray, sep: str) -> pa.Array:
    rows = row_ids(offsets)
    counts = np.bincount(rows[keep], minlength=len(offsets) - 1)
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(new_offsets), values.filter(pa.array(keep)))
    return pc.binary_join(lists, sep)


def joined_array(batch: pa.RecordBatch, sep: str = "\n") -> pa.Array:
    """Vectorized :func:`offline.data.records.joined_text`: one string per row, never null."""
    kind = kind_of(batch)
    n = batch.num_rows
    if kind == "text":
        return pc.fill_null(batch.column("text"), "")
    if kind == "instruction":
        cols = [batch.column(c) for c in TEXT_COLUMNS["instruction"]]
        order = np.arange(3 * n).reshape(3, n).T.ravel()
        values = pa.concat_arrays(cols).take(pa.array(order))
        offsets: IntArray = np.arange(0, 3 * n + 1, 3, dtype=np.int64)
        keep: BoolArray = values.is_valid().to_numpy(zero_copy_only=False)
        return _join_lists(offsets, values, keep, sep)
    col = batch.column("messages")
    offsets, structs = list_parts(col)
    contents = structs.field("content")
    row_valid: BoolArray = col.is_valid().to_numpy(zero_copy_only=False)
    valid: BoolArray = contents.is_valid().to_numpy(zero_copy_only=False)
    return _join_lists(offsets, contents, valid & row_valid[row_ids(offsets)], sep)


def _differs(old: pa.Array, new: pa.Array) -> BoolArray:
    same = pc.fill_null(pc.equal(old, new), pc.and_(old.is_null(), new.is_null()))
    out: BoolArray = ~same.to_numpy(zero_copy_only=False)
    return out


def changed_rows(old: pa.RecordBatch, new: pa.RecordBatch) -> BoolArray:
    """Which rows have any text value (message contents included) that differs."""
    changed = np.zeros(old.num_rows, dtype=np.bool_)
    for name in TEXT_COLUMNS.get(kind_of(old), ()):
        a, b = old.column(name), new.column(name)
        if name != "messages":
            changed |= _differs(a, b)
            continue
        offsets, old_values = list_parts(a)
        _, new_values = list_parts(b)
        flags = _differs(old_values.field("content"), new_values.field("content"))
        changed |= np.bincount(row_ids(offsets), flags, minlength=old.num_rows) > 0
    return changed


def _sub(pattern: str, replacement: str) -> Rewrite:
    def run(values: pa.Array) -> pa.Array:
        return pc.replace_substring_regex(values, pattern=pattern, replacement=replacement)

    return run


def _chain(ops: list[Rewrite]) -> Rewrite:
    def run(values: pa.Array) -> pa.Array:
        for op in ops:
            values = op(values)
        return values

    return run


def _map_where(values: pa.Array, fn: Callable[[str], str], where: pa.Array) -> pa.Array:
    """Apply a Python ``fn`` only to the values where ``where`` is true (nulls untouched)."""
    where = pc.fill_null(where, False)
    picked = values.filter(where).to_pylist()
    if not picked:
        return values
    return pc.replace_with_mask(values, where, pa.array([fn(v) for v in picked], pa.string()))


# Whitespace tidying shared by normalize and markup.
# Runs of two or more, or a lone non-ASCII space or tab: a lone " " needs no rewrite, and each
# RE2 match costs about as much as scanning 100 characters.
_SPACES = r"[\t\p{Zs}]{2,}|[\t\x{a0}\x{1680}\x{2000}-\x{200a}\x{202f}\x{205f}\x{3000}]"
_LINE_EDGES = r"(?m)^[\t\p{Zs}]+|[\t\p{Zs}]+$"
_BLANK_LINES = r"\n{3,}"


def _tidy() -> Rewrite:
    return _chain(
        [
            _sub(_SPACES, " "),
            _sub(_LINE_EDGES, ""),
            _sub(_BLANK_LINES, "\n\n"),
            pc.utf8_trim_whitespace,
        ]
    )


# ---------------------------------------------------------------------------------------------
# normalize

# CR/LF pairs, lone CR, VT, FF, NEL and the Unicode line/paragraph separators all end a line.
_NEWLINES = r"\r\n?|[\x0b\x0c\x{85}\x{2028}\x{2029}]"
# C0/C1 controls except tab and newline, plus every format character (Cf): zero-width space,
# (non-)joiners, BOM, soft hyphen, bidi marks and embeddings.
_CONTROLS = r"[\x00-\x08\x0b-\x1f\x7f-\x{9f}\p{Cf}]"

EMPTY_REASON = "empty after normalization"


class NormalizeParams(Strict):
    """Unicode normalization and whitespace clean-up; each switch can be turned off."""

    form: Literal["NFKC", "NFC", "NFKD", "NFD"] | None = "NFKC"
    """Unicode normal form; NFKC folds fullwidth letters and digits to ASCII (null: keep)."""
    newlines: bool = True
    """Turn CRLF, CR, VT, FF and U+2028/2029 into \\n."""
    controls: bool = True
    """Remove control characters (except \\n, \\t) and zero-width/BOM/bidi format characters."""
    collapse_spaces: bool = True
    """Collapse each run of spaces and tabs into one space (this also flattens code indent)."""
    trim_lines: bool = True
    """Remove spaces at the start and end of every line."""
    collapse_newlines: bool = True
    """Collapse three or more newlines into one blank line."""
    strip: bool = True
    """Remove leading and trailing whitespace of each value."""


def _normalizer(p: NormalizeParams) -> Rewrite:
    ops: list[Rewrite] = []
    if p.newlines:
        ops.append(_sub(_NEWLINES, "\n"))
    if p.form is not None:
        form = p.form
        ops.append(lambda values: pc.utf8_normalize(values, form=form))
    if p.controls:
        ops.append(_sub(_CONTROLS, ""))
    if p.collapse_spaces:
        ops.append(_sub(_SPACES, " "))
    if p.trim_lines:
        ops.append(_sub(_LINE_EDGES, ""))
    if p.collapse_newlines:
        ops.append(_sub(_BLANK_LINES, "\n\n"))
    if p.strip:
        ops.append(pc.utf8_trim_whitespace)
    return _chain(ops)


class _Normalize:
    name = "normalize"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(self, params: NormalizeParams) -> None:
        self._rewrite = _normalizer(params)

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        new = map_text_arrays(batch, self._rewrite)
        changed = changed_rows(batch, new)
        # Whitespace-only counts as empty: joined values leave their separators behind.
        content = pc.match_substring_regex(joined_array(new), r"[^\s\p{Z}]")
        reasons = [None if c else EMPTY_REASON for c in content.to_pylist()]
        return Outcome(new, reasons, {"changed": int(changed.sum())})

    def close(self) -> dict[str, int]:
        return {}


def normalize(params: NormalizeParams, ctx: Context) -> Step:
    """Build the ``normalize`` step: NFKC, control/format characters out, whitespace tidied.

    Rows with no text but whitespace afterwards are rejected ("empty after normalization"); the
    ``changed`` count tallies rows whose text was rewritten.
    """
    return _Normalize(params)


# ---------------------------------------------------------------------------------------------
# markup

# Written out so that only real HTML element names count as tags: "List<String>", "<name>" and
# "x<3" survive. Elements in _BLOCK_TAGS end a line; td/th become a space; the rest vanish.
_BLOCK_TAGS = (
    "address article aside blockquote body br dd details dialog div dl dt fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 head header hgroup hr html li main nav ol p pre "
    "section summary table tbody tfoot thead title tr ul"
)
_CELL_TAGS = "td th"
_INLINE_TAGS = (
    "a abbr area audio b base bdi bdo button canvas caption center cite code col colgroup data "
    "datalist del dfn em embed font i iframe img input ins kbd label legend link map mark menu "
    "meta meter noscript object optgroup option output param picture progress q rp rt ruby s "
    "samp script select small source span strike strong style sub sup svg template textarea "
    "time track tt u var video wbr"
)
_ANY_TAG_NAME = r"[A-Za-z][\w:.-]*"
# Attribute syntax is required after the name, so "<john@example.com>" is not a tag.
_ATTRS = r"""(?:\s+[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*\s*/?"""
_ELEMENT_NAME = r"^[A-Za-z][A-Za-z0-9:-]*$"
_ENTITY = r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);"

# Markdown: images and links keep their text, emphasis keeps its words.
_MARKDOWN = [
    (r"!\[([^\]\n]*)\]\([^)\n]*\)", r"\1"),
    (r"\[([^\]\n]+)\]\([^)\n]*\)", r"\1"),
    (r"\*\*([^*\n]+)\*\*", r"\1"),
    (r"__([^_\n]+)__", r"\1"),
    (r"(?m)^[ \t]*#{1,6}[ \t]+", ""),
    (r"(?m)^[ \t]*```[^`\n]*$", ""),
    (r"(?m)^[ \t]*(?:[-*_][ \t]*){3,}$", ""),
]


class MarkupParams(Strict):
    """Strip HTML/XML markup and decode entities; markdown clean-up is optional."""

    tags: Literal["html", "any"] = "html"
    """html: strip known HTML element tags only (keeps "List<String>", "<name>"); any: any tag."""
    drop_elements: list[Annotated[str, StringConstraints(pattern=_ELEMENT_NAME)]] = Field(
        default_factory=lambda: ["script", "style"]
    )
    """Elements removed together with their content."""
    entities: bool = True
    """Decode HTML entities (&amp; &nbsp; &#39; ...)."""
    markdown: bool = False
    """Also strip markdown: images and links keep their text; headings, bold, fences, rules go."""


def _tag(names: str | None) -> str:
    """A tag regex for space-separated element ``names`` (None: any name)."""
    name = _ANY_TAG_NAME if names is None else "(?:" + "|".join(names.split()) + r")\b"
    return rf"(?i)</?{name}{_ATTRS}>"


def _markup_ops(p: MarkupParams) -> list[Rewrite]:
    ops: list[Rewrite] = []
    if p.drop_elements:
        blocks = "|".join(rf"<{e}\b[^>]*>.*?</{e}\s*>" for e in p.drop_elements)
        ops.append(_sub(f"(?is){blocks}", ""))
    ops += [
        _sub(r"(?s)<!--.*?-->", ""),
        _sub(r"(?s)<!\[CDATA\[(.*?)\]\]>", r"\1"),
        _sub(r"<![A-Za-z][^<>]*>|<\?[^<>]*\?>", ""),
        _sub(_tag(_BLOCK_TAGS), "\n"),
        _sub(_tag(_CELL_TAGS), " "),
        _sub(_tag(_INLINE_TAGS if p.tags == "html" else None), ""),
    ]
    if p.markdown:
        ops += [_sub(pattern, repl) for pattern, repl in _MARKDOWN]
    if p.entities:
        ops.append(_unescape)
    return ops


def _unescape(values: pa.Array) -> pa.Array:
    # html.unescape is Python; only values that hold an entity pay for it.
    where = pc.match_substring_regex(values, _ENTITY)
    return _map_where(values, lambda v: html.unescape(v).replace("\xa0", " "), where)


class _Markup:
    name = "markup"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(self, params: MarkupParams) -> None:
        strip = _chain(_markup_ops(params))
        tidy = _tidy()

        def rewrite(values: pa.Array) -> pa.Array:
            stripped = strip(values)
            # Removed tags leave stray spaces and blank lines; tidy only the values touched.
            touched = pc.fill_null(pc.not_equal(stripped, values), False)
            return pc.if_else(touched, tidy(stripped), stripped)

        self._rewrite = rewrite

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        new = map_text_arrays(batch, self._rewrite)
        return Outcome.keep_all(new, {"changed": int(changed_rows(batch, new).sum())})

    def close(self) -> dict[str, int]:
        return {}


def markup(params: MarkupParams, ctx: Context) -> Step:
    """Build the ``markup`` step: tags, comments, script/style blocks out; entities decoded.

    Only ``<`` followed by a tag name and attribute syntax is markup, so "a < b and c > d" and
    "x<3" are kept. Never rejects; ``changed`` tallies rewritten rows.
    """
    return _Markup(params)


# ---------------------------------------------------------------------------------------------
# regex

# Removes what is not text: emoji and pictographs, dingbats, box drawing, private-use and
# unassigned code points, and the variation selectors/keycaps that glue emoji together, with
# the spaces after them. Kept: letters, digits and marks (CJK included), punctuation (CJK
# 。「」 included), spaces, currency and math symbols, all of ASCII (so e-mail addresses, URLs
# and phone numbers reach the pii step intact) and the degree sign.
JUNK_PATTERN = r"(?:[^\pL\pN\pM\pP\pZ\p{Sc}\p{Sm}\x00-\x7F°]|[\x{FE00}-\x{FE0F}\x{20E3}])+[ \t]*"
# Junk at the end of a line leaves the spaces before it behind.
LINE_END_SPACES = r"(?m)[ \t]+$"


class RegexRule(Strict):
    """One rule: substitute ``pattern`` with ``replace``, or reject rows whose text matches it."""

    pattern: str
    """RE2 syntax (fast, vectorized); a pattern only Python's re accepts runs in Python."""
    replace: str = ""
    """Replacement for action "replace"; \\1..\\9 insert groups (\\0 the whole match in RE2)."""
    action: Literal["replace", "reject"] = "replace"
    reason: str = ""
    """Ledger reason for action "reject" (default: "matches regex rule N")."""


def default_rules() -> list[RegexRule]:
    """The default rules: drop emoji and other non-text symbols, then the spaces they leave."""
    return [RegexRule(pattern=JUNK_PATTERN), RegexRule(pattern=LINE_END_SPACES)]


class RegexParams(Strict):
    """Ordered regex rules applied to every text value (reject rules test the joined text)."""

    rules: list[RegexRule] = Field(default_factory=default_rules)


class _Rule:
    """A validated rule, bound to the engine that can run it."""

    def __init__(self, index: int, rule: RegexRule) -> None:
        self.index = index
        self.rule = rule
        self.reject = rule.action == "reject"
        self.reason = rule.reason or f"matches regex rule {index}"
        self.python: re.Pattern[str] | None = None
        replace = "" if self.reject else rule.replace
        try:
            pc.replace_substring_regex(pa.array(["probe"]), rule.pattern, replace)
        except pa.ArrowInvalid as re2_error:
            self.python = self._python_fallback(re2_error, replace)

    def _python_fallback(self, re2_error: Exception, replace: str) -> re.Pattern[str]:
        try:
            compiled = re.compile(self.rule.pattern)
            compiled.sub(replace, "")
        except (re.error, IndexError) as py_error:
            raise ConfigError(
                f"regex rule {self.index} (pattern {self.rule.pattern!r}, replace {replace!r}) "
                f"is invalid: RE2 says {re2_error}; Python re says {py_error}",
                fix=f"fix clean.regex.rules[{self.index}] in params.yaml (RE2 syntax preferred)",
            ) from None
        return compiled

    def substitute(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.python is None:
            return map_text_arrays(batch, _sub(self.rule.pattern, self.rule.replace))
        rx, replace = self.python, self.rule.replace
        return map_text(batch, lambda v: rx.sub(replace, v))

    def matches(self, batch: pa.RecordBatch) -> list[bool]:
        joined = joined_array(batch)
        if self.python is None:
            hits: list[bool] = pc.match_substring_regex(joined, self.rule.pattern).to_pylist()
            return hits
        rx = self.python
        return [rx.search(v) is not None for v in joined.to_pylist()]


class _Regex:
    name = "regex"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(self, params: RegexParams) -> None:
        self._rules = [_Rule(i, r) for i, r in enumerate(params.rules)]

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        new = batch
        reasons: list[str | None] = [None] * batch.num_rows
        for rule in self._rules:
            if not rule.reject:
                new = rule.substitute(new)
                continue
            for row, hit in enumerate(rule.matches(new)):
                if hit and reasons[row] is None:
                    reasons[row] = rule.reason
        return Outcome(new, reasons, {"changed": int(changed_rows(batch, new).sum())})

    def close(self) -> dict[str, int]:
        return {}


def regex(params: RegexParams, ctx: Context) -> Step:
    """Build the ``regex`` step: ordered substitution and reject rules.

    Every pattern is checked now: one neither RE2 nor Python re can compile raises
    :class:`~offline.errors.ConfigError` naming the rule's index and pattern. RE2 patterns run
    vectorized; a pattern only Python accepts (lookaround, backreferences) runs row by row.

    Raises:
        ConfigError: a rule's pattern or replacement is invalid.
    """
    return _Regex(params)


STEPS = (
    StepSpec("normalize", NormalizeParams, normalize, order=10),
    StepSpec("markup", MarkupParams, markup, order=20),
    StepSpec("regex", RegexParams, regex, order=30),
)
