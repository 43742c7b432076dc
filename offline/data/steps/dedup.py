"""The ``exact_dedup`` and ``near_dedup`` steps: keep the first of each group of copies.

Both judge a record by its joined text (:func:`~offline.data.records.joined_text`) after a
normalization that ignores case, spacing and punctuation (each switchable), and both remember
what they kept in spillable stores (:mod:`offline.data.index`), so memory stays under
``memory_mb`` however long the stream. A duplicate's ``cluster`` column names the kept row's
``record_id``, which the split stage uses to keep a cluster on one side.

- ``exact_dedup`` keys each text by an 8-byte BLAKE2b digest of its normalized form.
- ``near_dedup`` finds texts whose character n-gram sets overlap by at least ``threshold``
  (Jaccard): MinHash signatures, LSH bands to find candidates among the kept representatives, and
  a check of each candidate's estimated Jaccard before a row is called a duplicate. Hashing is
  vectorized over the whole batch: code points, rolling n-gram hashes, then every permutation as
  one 2-D array operation.
"""

from __future__ import annotations

import math
from functools import cache
from hashlib import blake2b
from itertools import pairwise
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from offline.config import Strict
from offline.data.index import KeyIndex, RowStore, StringStore, unique_first
from offline.data.records import TEXT_KINDS, joined_text
from offline.data.steps.base import Context, Outcome, Step, StepSpec

U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

__all__ = [
    "ExactDedupParams",
    "NearDedupParams",
    "exact_dedup",
    "lsh_params",
    "minhash_signatures",
    "near_dedup",
    "normalize_for_dedup",
]

MIB = 1 << 20
_MASK64 = (1 << 64) - 1
_U64_MAX = np.uint64(_MASK64)
# Odd 64-bit multipliers: the n-gram polynomial base, the band-key base and the seed's salt.
_NGRAM_BASE = np.uint64(0x9E3779B97F4A7C15)
_BAND_BASE = np.uint64(0xD6E8FEB86659FD93)
_SEED_SALT = np.uint64(0xA0761D6478BD642F)
# LSH parameters weigh a missed near-duplicate nine times a wasted candidate check: the check is
# cheap and vectorized, a miss is silent.
_FP_WEIGHT, _FN_WEIGHT = 0.1, 0.9
# Shingles x permutations per 2-D block: small enough to stay in cache.
_SHINGLE_CHUNK = 1 << 15
_PERM_CHUNK = 32
_VERIFY_CHUNK = 1 << 14

# Scripts written without spaces between words; a space next to one of their characters is
# layout, not content.
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}]"
_WS = r"[\s\p{Z}]"
# Only spacing that is not already one plain space: rewriting every single space costs 9x more.
_SPACING = (
    f"{_WS}{_WS}+"
    r"|[\t\n\v\f\r\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
_PUNCT_RUN = r"[\p{P}\s\p{Z}]*\p{P}[\p{P}\s\p{Z}]*"


class _TextKey(Strict):
    """How a text is normalized before two texts are compared."""

    lowercase: bool = Field(True, description="compare case-insensitively")
    collapse_whitespace: bool = Field(
        True, description="runs of whitespace count as one space; spaces next to CJK do not count"
    )
    strip_punctuation: bool = Field(
        True, description="ignore punctuation (Unicode P*, CJK full stops and brackets included)"
    )


class ExactDedupParams(_TextKey):
    """Reject later copies of a text; the first occurrence is kept."""

    memory_mb: float = Field(
        256, ge=0, description="memory for the index of seen texts; past it, spill to the workdir"
    )


class NearDedupParams(_TextKey):
    """Reject (or tag) texts whose character n-grams mostly match an earlier kept text."""

    ngram: int = Field(5, ge=1, le=64, description="characters per shingle")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    threshold: float = Field(
        0.7, gt=0, le=1, description="estimated Jaccard similarity from which a text is a duplicate"
    )
    action: Literal["drop", "tag"] = Field(
        "drop", description="drop: reject duplicates; tag: keep them, with cluster set"
    )
    seed: int = Field(1, ge=0, description="seed of the MinHash permutations")
    memory_mb: float = Field(
        256, ge=0, description="memory for LSH index and signatures; past it, spill to the workdir"
    )


# --- normalization and text keys ------------------------------------------------------------------


def normalize_for_dedup(texts: pa.Array, params: _TextKey) -> pa.Array:
    """The comparison form of each text: lowercased, punctuation and spacing ignored (per params).

    Punctuation becomes a space when whitespace is collapsed, so "a,b" and "a, b" agree.
    """
    if params.lowercase:
        texts = pc.utf8_lower(texts)
    if params.strip_punctuation and params.collapse_whitespace:
        texts = pc.replace_substring_regex(texts, _PUNCT_RUN, " ")
    elif params.strip_punctuation:
        texts = pc.replace_substring_regex(texts, r"\p{P}+", "")
    if params.collapse_whitespace:
        texts = pc.replace_substring_regex(texts, _SPACING, " ")
        texts = pc.replace_substring_regex(texts, f" ?({_CJK}) ?", r"\1")
        texts = pc.utf8_trim(texts, " ")
    return texts


def _key_texts(batch: pa.RecordBatch, params: _TextKey) -> pa.LargeStringArray:
    texts = pa.array(joined_text(batch), pa.large_string())
    result: pa.LargeStringArray = normalize_for_dedup(texts, params)
    return result


def _utf8(texts: pa.LargeStringArray) -> tuple[I64, memoryview]:
    """Offsets (rebased to 0) and the UTF-8 bytes of a string array without copying per row."""
    buffers = texts.buffers()
    offsets = np.frombuffer(buffers[1], np.int64, len(texts) + 1, texts.offset * 8)
    data = memoryview(buffers[2]) if buffers[2] is not None else memoryview(b"")
    return offsets - offsets[0], data[int(offsets[0]) : int(offsets[-1])]


def _digests(texts: pa.LargeStringArray) -> U64:
    """An 8-byte BLAKE2b digest of each string."""
    offsets, data = _utf8(texts)
    bounds = offsets.tolist()
    joined = b"".join(blake2b(data[s:e], digest_size=8).digest() for s, e in pairwise(bounds))
    return np.frombuffer(joined, "<u8").astype(np.uint64)


def _mix64(x: U64) -> U64:
    """The splitmix64 finalizer on a copy: spreads every input bit over the whole word."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


# --- MinHash --------------------------------------------------------------------------------------


def _code_points(texts: pa.LargeStringArray) -> tuple[U64, I64]:
    """All code points of the batch in one array, and each row's length in code points."""
    _, data = _utf8(texts)
    codes = np.frombuffer(bytes(data).decode("utf-8").encode("utf-32-le"), np.uint32)
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes.astype(np.uint64), lengths


def _horner(columns: list[U64]) -> U64:
    h = columns[0].copy()
    for col in columns[1:]:
        h *= _NGRAM_BASE
        h += col
    return h


def _shingles(codes: U64, lengths: I64, n: int) -> tuple[U64, I64]:
    """Hashes of every character n-gram, row by row, and the row each belongs to.

    A window is a polynomial hash of n code points (uint64, wrapping); windows that cross into the
    next row are dropped. A non-empty row shorter than n is one shingle: its whole text.
    """
    total = len(codes)
    padded = np.zeros(total + n - 1, np.uint64)
    padded[:total] = codes
    h = _horner([padded[k : k + total] for k in range(n)])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    valid = np.arange(total) + n <= ends[row_of]
    short = np.flatnonzero((lengths > 0) & (lengths < n))
    if len(short):
        window = starts[short, None] + np.arange(n)
        grams = np.where(np.arange(n) < lengths[short, None], padded[window], np.uint64(0))
        h[starts[short]] = _horner([grams[:, k] for k in range(n)])
        valid[starts[short]] = True
    return _mix64(h[valid]), row_of[valid]


def _permutations(num_perm: int, seed: int) -> tuple[U64, U64]:
    """Multiply-add hash functions ``a*x + b mod 2**64`` (a odd), one per permutation."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, _MASK64, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, _MASK64, num_perm, dtype=np.uint64, endpoint=True)
    return a, b


def _min_hash(hashes: U64, rows: I64, num_rows: int, a: U64, b: U64) -> U64:
    """Per row and permutation, the least ``a*x + b`` over the row's shingles; shape (P, rows).

    Shingles are taken a cache-sized block at a time; a row split between blocks keeps the
    minimum of its pieces.
    """
    out = np.full((len(a), num_rows), _U64_MAX, np.uint64)
    row_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else rows
    work = np.empty((_PERM_CHUNK, _SHINGLE_CHUNK), np.uint64)
    for s0 in range(0, len(hashes), _SHINGLE_CHUNK):
        x = hashes[s0 : s0 + _SHINGLE_CHUNK]
        lo, hi = np.searchsorted(row_starts, [s0, s0 + len(x)])
        seg = row_starts[lo:hi] - s0
        if not len(seg) or seg[0] != 0:
            seg = np.r_[0, seg]
        seg_rows = rows[s0 + seg]
        for p0 in range(0, len(a), _PERM_CHUNK):
            p1 = min(len(a), p0 + _PERM_CHUNK)
            block = work[: p1 - p0, : len(x)]
            np.multiply(a[p0:p1, None], x[None, :], out=block)
            np.add(block, b[p0:p1, None], out=block)
            least = np.minimum.reduceat(block, seg, axis=1)
            out[p0:p1, seg_rows] = np.minimum(out[p0:p1, seg_rows], least)
    return out


def minhash_signatures(texts: pa.LargeStringArray, ngram: int, a: U64, b: U64) -> U32:
    """MinHash signatures of already-normalized texts, shape ``(rows, permutations)``, uint32.

    An empty text gets the signature of one fixed shingle, so empty texts match each other.
    """
    codes, lengths = _code_points(texts)
    hashes, rows = _shingles(codes, lengths, ngram)
    least = _min_hash(hashes, rows, len(texts), a, b)
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        least[:, empty] = (a * _mix64(np.zeros(1, np.uint64)) + b)[:, None]
    return np.ascontiguousarray((least >> np.uint64(32)).astype(np.uint32).T)


# --- LSH ------------------------------------------------------------------------------------------


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows per band for a Jaccard ``threshold``.

    Minimizes the weighted area under the S-curve ``1 - (1 - s**r)**b`` below the threshold
    (candidates that are not duplicates) plus the area above it left out (duplicates never
    proposed), over every ``b * r <= num_perm``; misses weigh nine times more.
    """
    s = np.linspace(0.0, 1.0, 1001)
    below = s < threshold
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        bands = np.arange(1, num_perm // rows + 1)[:, None]
        prob = 1.0 - (1.0 - s**rows) ** bands
        fp = np.trapezoid(np.where(below, prob, 0.0), s, axis=1)
        fn = np.trapezoid(np.where(below, 0.0, 1.0 - prob), s, axis=1)
        cost = _FP_WEIGHT * fp + _FN_WEIGHT * fn
        i = int(np.argmin(cost))
        if best is None or cost[i] < best[0]:
            best = (float(cost[i]), i + 1, rows)
    assert best is not None
    return best[1], best[2]


def _band_keys(sigs: U32, bands: int, rows: int, seed: int) -> U64:
    """One uint64 key per row and band: a hash of the band's signature values and its number."""
    n = len(sigs)
    values = sigs[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    seed_salt = np.uint64((seed * int(_SEED_SALT)) & _MASK64)
    salts = _mix64(np.arange(bands, dtype=np.uint64) + seed_salt)
    keys = np.broadcast_to(salts, (n, bands)).copy()
    for j in range(rows):
        keys *= _BAND_BASE
        keys += values[:, :, j]
    return _mix64(keys)


# --- the steps ------------------------------------------------------------------------------------


class _Clusters:
    """Counts representatives that gained a duplicate, in bounded memory."""

    def __init__(self, ctx: Context, memory_bytes: int) -> None:
        self._seen = KeyIndex(ctx.workdir, memory_bytes)
        self.clusters = 0
        self.duplicates = 0

    def add(self, rep_ids: I64) -> None:
        self.duplicates += len(rep_ids)
        ids = np.unique(rep_ids).astype(np.uint64)
        new = ids[self._seen.lookup(ids) < 0]
        self._seen.insert(new, new.astype(np.int64))
        self.clusters += len(new)

    def close(self) -> dict[str, int]:
        self._seen.close()
        return {"clusters": self.clusters, "duplicates": self.duplicates}


def _with_clusters(batch: pa.RecordBatch, rows: I64, clusters: list[str]) -> pa.RecordBatch:
    """``batch`` with the ``cluster`` value of ``rows`` replaced."""
    if not len(rows):
        return batch
    i = batch.schema.get_field_index("cluster")
    values = batch.column(i).to_pylist()
    for row, cluster in zip(rows.tolist(), clusters, strict=True):
        values[row] = cluster
    columns = list(batch.columns)
    columns[i] = pa.array(values, batch.schema.field(i).type)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _duplicates(
    batch: pa.RecordBatch, dups: I64, names: list[str], reasons: list[str] | None
) -> Outcome:
    """The outcome for a batch whose rows ``dups`` duplicate the kept rows ``names``: their
    cluster set, and rejected with ``reasons`` (``None``: kept, only tagged)."""
    per_row: list[str | None] = [None] * batch.num_rows
    if reasons is not None:
        for row, reason in zip(dups.tolist(), reasons, strict=True):
            per_row[row] = reason
    return Outcome(_with_clusters(batch, dups, names), per_row, {"duplicates": len(dups)})


def _record_ids(batch: pa.RecordBatch) -> list[str]:
    ids: list[str] = batch.column(batch.schema.get_field_index("record_id")).to_pylist()
    return ids


class _ExactDedup:
    """Keeps the first row of each normalized text; later ones name it."""

    name = "exact_dedup"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(self, params: ExactDedupParams, ctx: Context) -> None:
        budget = int(params.memory_mb * MIB)
        self._params = params
        # Record ids (hex digests) outweigh the 16-byte index entries several times over.
        self._index = KeyIndex(ctx.workdir, budget // 4)
        self._kept = StringStore(ctx.workdir, budget // 2)
        self._clusters = _Clusters(ctx, budget // 4)

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        return self.apply(batch, exact_keys(self._params, batch))

    def apply(self, batch: pa.RecordBatch, keys: U64) -> Outcome:
        """The step on ``batch`` given its :func:`exact_keys` (computed anywhere, even in another
        process: they depend on the rows alone)."""
        if not batch.num_rows:
            return Outcome.keep_all(batch)
        kept_id, dups = self._resolve(keys, _record_ids(batch))
        names = self._kept.get(kept_id[dups])
        self._clusters.add(kept_id[dups])
        return _duplicates(batch, dups, names, [f"exact duplicate of {n}" for n in names])

    def _resolve(self, keys: U64, ids: list[str]) -> tuple[I64, I64]:
        """Keep this batch's first occurrences; returns each row's kept id and the later rows."""
        kept_id = self._index.lookup(keys)
        dup = kept_id >= 0
        new = np.flatnonzero(~dup)
        _, first, inverse = unique_first(keys[new])
        leader = new[first[inverse]]
        reps = new[leader == new]
        row_id = np.full(len(keys), -1, np.int64)
        row_id[reps] = len(self._kept) + np.arange(len(reps))
        self._index.insert(keys[reps], row_id[reps])
        self._kept.append([ids[i] for i in reps.tolist()])
        kept_id[new] = row_id[leader]
        dup[new] = leader != new
        return kept_id, np.flatnonzero(dup)

    def close(self) -> dict[str, int]:
        self._index.close()
        self._kept.close()
        return self._clusters.close()


class _NearDedup:
    """MinHash LSH against the kept representatives, each candidate verified by its signature."""

    name = "near_dedup"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(self, params: NearDedupParams, ctx: Context) -> None:
        budget = int(params.memory_mb * MIB)
        self._params = params
        self._bands, _ = _lsh_params(params.threshold, params.num_perm)
        # Agreeing positions needed: the estimated Jaccard is agreements / num_perm.
        self._need = math.ceil(params.threshold * params.num_perm - 1e-9)
        self._index = KeyIndex(ctx.workdir, budget * 3 // 10)
        self._sigs = RowStore(ctx.workdir, budget * 6 // 10, params.num_perm, np.uint32)
        self._kept = StringStore(ctx.workdir, budget // 20)
        self._clusters = _Clusters(ctx, budget // 20)

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        return self.apply(batch, near_keys(self._params, batch))

    def apply(self, batch: pa.RecordBatch, prepared: tuple[U32, U64]) -> Outcome:
        """The step on ``batch`` given its :func:`near_keys` (signatures and band keys, which
        depend on the rows alone)."""
        if not batch.num_rows:
            return Outcome.keep_all(batch)
        sigs, keys = prepared
        owners = self._index.lookup(keys.ravel()).reshape(keys.shape)
        match, agree = self._match_kept(sigs, owners)
        local, local_agree = self._match_batch(sigs, keys, owners, match >= 0)
        reps = np.flatnonzero((match < 0) & (local < 0))
        rep_ids = self._keep(batch, sigs, keys, owners, reps)
        match[local >= 0] = rep_ids[local[local >= 0]]
        agree[local >= 0] = local_agree[local >= 0]
        return self._outcome(batch, match, agree)

    def close(self) -> dict[str, int]:
        self._index.close()
        self._sigs.close()
        self._kept.close()
        return self._clusters.close()

    def _match_kept(self, sigs: U32, owners: I64) -> tuple[I64, I64]:
        """Per row, the earliest kept representative owning one of its buckets that passes the
        check (or -1), and the number of signature positions they agree on."""
        match = np.full(len(sigs), -1, np.int64)
        agree = np.zeros(len(sigs), np.int64)
        rows, bands = np.nonzero(owners >= 0)
        if not len(rows):
            return match, agree
        ids = owners[rows, bands]
        order = np.lexsort((ids, rows))
        rows, ids = rows[order], ids[order]
        distinct = np.r_[True, (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])]
        rows, ids = rows[distinct], ids[distinct]
        agreed = self._agreements(sigs, rows, ids)
        ok = np.flatnonzero(agreed >= self._need)
        # Pairs are sorted by (row, id): the first passing pair of a row is its earliest match.
        ok = ok[np.r_[True, rows[ok][1:] != rows[ok][:-1]]] if len(ok) else ok
        match[rows[ok]] = ids[ok]
        agree[rows[ok]] = agreed[ok]
        return match, agree

    def _agreements(self, sigs: U32, rows: I64, ids: I64) -> I64:
        out = np.empty(len(rows), np.int64)
        for s in range(0, len(rows), _VERIFY_CHUNK):
            kept = self._sigs.get(ids[s : s + _VERIFY_CHUNK])
            out[s : s + _VERIFY_CHUNK] = (sigs[rows[s : s + _VERIFY_CHUNK]] == kept).sum(axis=1)
        return out

    def _match_batch(self, sigs: U32, keys: U64, owners: I64, matched: Bools) -> tuple[I64, I64]:
        """Rows that match an earlier representative of this very batch, found in stream order.

        Only a row sharing an unowned bucket with another unmatched row of the batch can; those
        rows are walked in order, exactly as if each had come in a batch of its own, so the
        result does not depend on the batch size.
        """
        local = np.full(len(sigs), -1, np.int64)
        agree = np.zeros(len(sigs), np.int64)
        holder: dict[int, int] = {}  # bucket key -> first representative row holding it
        for row, buckets in self._shared_buckets(keys, owners, matched):
            for c in sorted({holder[k] for k in buckets if k in holder}):
                agreed = int(np.count_nonzero(sigs[row] == sigs[c]))
                if agreed >= self._need:
                    local[row], agree[row] = c, agreed
                    break
            else:
                for k in buckets:
                    holder.setdefault(k, row)
        return local, agree

    def _shared_buckets(
        self, keys: U64, owners: I64, matched: Bools
    ) -> list[tuple[int, list[int]]]:
        """Per unmatched row sharing an unowned bucket with another: (row, those bucket keys)."""
        pending = np.flatnonzero(~matched)
        rows: I64 = np.repeat(pending, self._bands)
        bucket: U64 = keys[pending].ravel()
        free = owners[pending].ravel() < 0
        rows, bucket = rows[free], bucket[free]
        _, _, inverse = unique_first(bucket)
        shared = np.bincount(inverse)[inverse] >= 2
        rows, bucket = rows[shared], bucket[shared]
        if not len(rows):
            return []
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        bounds = [*starts.tolist(), len(rows)]
        keys_list, row_list = bucket.tolist(), rows.tolist()
        return [(row_list[s], keys_list[s:e]) for s, e in pairwise(bounds)]

    def _keep(self, batch: pa.RecordBatch, sigs: U32, keys: U64, owners: I64, reps: I64) -> I64:
        """Store the new representatives; returns each batch row's representative id (or -1).

        A representative takes the buckets nobody owns yet; within the batch the first one in
        stream order wins a bucket, as :meth:`KeyIndex.insert` keeps first occurrences.
        """
        rep_ids = np.full(len(sigs), -1, np.int64)
        rep_ids[reps] = len(self._sigs) + np.arange(len(reps))
        self._sigs.append(sigs[reps])
        ids = _record_ids(batch)
        self._kept.append([ids[i] for i in reps.tolist()])
        free = owners[reps].ravel() < 0
        owner = np.repeat(rep_ids[reps], self._bands)
        self._index.insert(keys[reps].ravel()[free], owner[free])
        return rep_ids

    def _outcome(self, batch: pa.RecordBatch, match: I64, agree: I64) -> Outcome:
        dups = np.flatnonzero(match >= 0)
        names = self._kept.get(match[dups])
        self._clusters.add(match[dups])
        if self._params.action == "tag":
            return _duplicates(batch, dups, names, None)
        share = (agree[dups] / self._params.num_perm).tolist()
        reasons = [
            f"near duplicate of {n} (jaccard ~{j:.2f})" for n, j in zip(names, share, strict=True)
        ]
        return _duplicates(batch, dups, names, reasons)


@cache
def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    return lsh_params(threshold, num_perm)


@cache
def _cached_permutations(num_perm: int, seed: int) -> tuple[U64, U64]:
    return _permutations(num_perm, seed)


def exact_keys(params: ExactDedupParams, batch: pa.RecordBatch) -> U64:
    """Per row, the 64-bit key of its normalized text: the per-row half of ``exact_dedup``."""
    return _digests(_key_texts(batch, params))


def near_keys(params: NearDedupParams, batch: pa.RecordBatch) -> tuple[U32, U64]:
    """Per row, its MinHash signature and LSH band keys: the per-row half of ``near_dedup``,
    by far its larger part."""
    a, b = _cached_permutations(params.num_perm, params.seed)
    bands, rows = _lsh_params(params.threshold, params.num_perm)
    sigs = minhash_signatures(_key_texts(batch, params), params.ngram, a, b)
    return sigs, _band_keys(sigs, bands, rows, params.seed)


def exact_dedup(params: ExactDedupParams, ctx: Context) -> Step:
    """Build the ``exact_dedup`` step: the first of each normalized text is kept."""
    return _ExactDedup(params, ctx)


def near_dedup(params: NearDedupParams, ctx: Context) -> Step:
    """Build the ``near_dedup`` step: MinHash LSH with verified candidates."""
    return _NearDedup(params, ctx)


STEPS = (
    StepSpec(
        "exact_dedup",
        ExactDedupParams,
        exact_dedup,
        80,
        final_in="dedup",
        stateful=True,
        prepare=exact_keys,
        shuffle="key",
    ),
    StepSpec(
        "near_dedup",
        NearDedupParams,
        near_dedup,
        90,
        final_in="dedup",
        stateful=True,
        prepare=near_keys,
        shuffle="bands",
    ),
)
