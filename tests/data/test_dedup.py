"""exact_dedup and near_dedup: planted copies are caught, distinct texts are left alone, and the
answer depends neither on the batch size nor on whether the index spilled to disk."""

# Chinese test texts hold full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from offline.data.records import schema_for
from offline.data.steps import dedup
from offline.data.steps.base import Context, Step
from offline.data.steps.dedup import ExactDedupParams, NearDedupParams, exact_dedup, near_dedup

# --- building batches and running a step over a stream --------------------------------------------


def _batch(texts: list[str], ids: list[str], kind: str = "text") -> pa.RecordBatch:
    n = len(texts)
    common: dict[str, list[Any]] = {
        "record_id": ids,
        "dataset": ["d"] * n,
        "source": [f"f.jsonl:{i}" for i in range(n)],
        "original": texts,
        "id": [None] * n,
        "cluster": ids,
        "meta": [None] * n,
    }
    if kind == "text":
        fields = {"text": texts, "label": [None] * n}
    elif kind == "instruction":
        halves = [(t[: len(t) // 2], t[len(t) // 2 :]) for t in texts]
        fields = {"system": [None] * n, "instruction": [h[0] for h in halves]}
        fields["response"] = [h[1] for h in halves]
    else:
        fields = {
            "messages": [
                [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]
                for t in texts
            ],
            "label": [None] * n,
        }
    return pa.RecordBatch.from_pydict({**common, **fields}, schema=schema_for(kind))


@dataclass
class Result:
    reasons: list[str | None]
    clusters: list[str]
    totals: dict[str, int]
    counts: int


def _run(
    step: Step, texts: list[str], ids: list[str], batch_rows: int, kind: str = "text"
) -> Result:
    reasons: list[str | None] = []
    clusters: list[str] = []
    counted = 0
    for start in range(0, len(texts), batch_rows):
        batch = _batch(texts[start : start + batch_rows], ids[start : start + batch_rows], kind)
        out = step(batch)
        assert out.batch.schema == batch.schema and out.batch.num_rows == batch.num_rows
        for name in batch.schema.names:
            assert name == "cluster" or out.batch.column(name).equals(batch.column(name))
        reasons += out.reasons
        clusters += out.batch.column("cluster").to_pylist()
        counted += out.counts.get("duplicates", 0)
    return Result(reasons, clusters, step.close(), counted)


def _ctx(tmp_path: Path) -> Context:
    return Context(workdir=tmp_path, dataset="d", kind="text")


# --- exact_dedup ----------------------------------------------------------------------------------

_EN = "the quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat number {i}"
_ZH = "今天天气很好，我们一起去公园散步吧。第{i}次见面，请多多关照！"


def _variants(text: str) -> list[str]:
    """Copies that differ only in case, spacing or punctuation."""
    return [
        text.upper(),
        "  " + text.replace(" ", "   \t") + "\n",
        text.replace(" ", "\u00a0"),
        text.replace("，", ", ").replace("。", ".").replace("！", "!"),
        text.replace("，", "").replace("。", "").replace("！", "") + " ...",
        "«" + text + "»?!",
        text.title().replace(" ", "\n"),
    ]


def _exact_corpus(seed: int = 7) -> tuple[list[str], list[int]]:
    """Texts and the group each belongs to; each group is one base and its planted copies."""
    rng = random.Random(seed)
    items = []
    for i in range(300):
        base = (_EN if i % 2 else _ZH).format(i=i)
        picks = rng.sample(_variants(base), k=rng.randint(0, 3))
        items += [(base, i)] + [(v, i) for v in picks]
    rng.shuffle(items)
    return [t for t, _ in items], [g for _, g in items]


def _expected_exact(groups: list[int], ids: list[str]) -> tuple[list[str | None], list[str]]:
    first: dict[int, str] = {}
    reasons: list[str | None] = []
    clusters = []
    for group, rid in zip(groups, ids, strict=True):
        kept = first.setdefault(group, rid)
        reasons.append(None if kept == rid else f"exact duplicate of {kept}")
        clusters.append(kept)
    return reasons, clusters


def test_exact_dedup_catches_every_planted_copy(tmp_path: Path) -> None:
    texts, groups = _exact_corpus()
    ids = [f"r{i:05d}" for i in range(len(texts))]
    result = _run(exact_dedup(ExactDedupParams(), _ctx(tmp_path)), texts, ids, batch_rows=50)
    reasons, clusters = _expected_exact(groups, ids)
    assert result.reasons == reasons
    assert result.clusters == clusters
    copies = sum(r is not None for r in reasons)
    assert copies > 200
    assert result.counts == copies
    assert result.totals == {
        "clusters": len({g for g, r in zip(groups, reasons, strict=True) if r}),
        "duplicates": copies,
    }


def test_exact_dedup_leaves_different_texts_alone(tmp_path: Path) -> None:
    texts = [_EN.format(i=i) for i in range(100)] + [_ZH.format(i=i) for i in range(100)]
    texts += [
        "the quick brown fox",
        "the quick brown fix",
        "the quick brownfox jumps",
        "a b",
        "ab c",
    ]
    texts += ["数据清洗", "数据清冼", "", "12.5", "125"]
    ids = [f"r{i}" for i in range(len(texts))]
    result = _run(exact_dedup(ExactDedupParams(), _ctx(tmp_path)), texts, ids, batch_rows=64)
    assert result.reasons == [None] * len(texts)
    assert result.clusters == ids
    assert result.totals == {"clusters": 0, "duplicates": 0}


def test_exact_dedup_normalization_switches(tmp_path: Path) -> None:
    texts = ["Hello world", "hello world", "hello  world", "hello, world"]
    ids = ["a", "b", "c", "d"]
    strict = ExactDedupParams(lowercase=False, collapse_whitespace=False, strip_punctuation=False)
    assert _run(exact_dedup(strict, _ctx(tmp_path)), texts, ids, 4).reasons == [None] * 4
    loose = _run(exact_dedup(ExactDedupParams(), _ctx(tmp_path)), texts, ids, 4)
    assert loose.reasons == [None] + ["exact duplicate of a"] * 3
    no_case = ExactDedupParams(lowercase=False)
    assert _run(exact_dedup(no_case, _ctx(tmp_path)), texts, ids, 4).reasons == [
        None,
        None,
        "exact duplicate of b",
        "exact duplicate of b",
    ]


@pytest.mark.parametrize("kind", ["instruction", "conversation"])
def test_exact_dedup_judges_the_joined_text_of_every_kind(tmp_path: Path, kind: str) -> None:
    texts = [_EN.format(i=1), _EN.format(i=2), _EN.format(i=1).upper(), _EN.format(i=2)]
    result = _run(exact_dedup(ExactDedupParams(), _ctx(tmp_path)), texts, list("abcd"), 2, kind)
    assert result.reasons == [None, None, "exact duplicate of a", "exact duplicate of b"]


def test_exact_dedup_spilled_gives_the_same_answer(tmp_path: Path) -> None:
    texts, _ = _exact_corpus(seed=8)
    ids = [f"r{i:05d}" for i in range(len(texts))]
    memory = _run(exact_dedup(ExactDedupParams(), _ctx(tmp_path / "a")), texts, ids, 40)
    step = exact_dedup(ExactDedupParams(memory_mb=0), _ctx(tmp_path / "b"))
    spilled = _run(step, texts, ids, 40)
    assert (spilled.reasons, spilled.clusters) == (memory.reasons, memory.clusters)
    assert not any((tmp_path / "b").iterdir())  # close() removed the spill files


# --- near_dedup corpus ----------------------------------------------------------------------------


def _shingles(text: str, n: int = 5) -> set[str]:
    return {text[i : i + n] for i in range(max(1, len(text) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


class _Writer:
    """Random English-like (pseudo-words) and Chinese documents, and edits of them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
        self.hanzi = [chr(c) for c in rng.sample(range(0x4E00, 0x9FA5), 3000)]

    def document(self, chinese: bool) -> str:
        target = self.rng.randint(100, 400)
        if chinese:
            chars = [self.rng.choice(self.hanzi) for _ in range(target)]
            for i in range(12, len(chars), 13):
                chars[i] = self.rng.choice("，。；")
            return "".join(chars)
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < target:
            words.append(self.rng.choice(self.words) + ("," if self.rng.random() < 0.08 else ""))
        return " ".join(words) + "."

    def edit(self, text: str, chinese: bool) -> str:
        """One small edit: a typo, a swapped or added word, punctuation or whitespace."""
        rng = self.rng
        i = rng.randrange(1, len(text) - 1)
        unit = rng.choice(self.hanzi) if chinese else rng.choice(self.words)
        kind = rng.choice(["typo", "swap", "add", "punct", "space"])
        if kind == "typo":
            return text[:i] + (unit[0] if chinese else rng.choice("xyzq")) + text[i + 1 :]
        if kind == "add":
            return text[:i] + (unit if chinese else f" {unit} ") + text[i:]
        if kind == "punct":
            return text[:i] + rng.choice("，。！" if chinese else ",.;!") + text[i:]
        if kind == "space":
            return text[:i] + rng.choice(["  ", "\n", " \t "]) + text[i:]
        parts = list(text) if chinese else text.split(" ")
        j = rng.randrange(len(parts) - 1)
        parts[j], parts[j + 1] = parts[j + 1], parts[j]
        return ("" if chinese else " ").join(parts)

    def near(self, base: str, chinese: bool) -> str | None:
        text = base
        for _ in range(self.rng.randint(1, 4)):
            text = self.edit(text, chinese)
        return text if jaccard(base, text) >= 0.8 else None

    def far(self, base: str, chinese: bool) -> str | None:
        """Keep a run of the base and write the rest anew: Jaccard just under 0.5, so LSH often
        proposes the pair and only the signature check keeps it apart."""
        keep = int(len(base) * self.rng.uniform(0.55, 0.67))
        text = base[:keep] + self.document(chinese)[: len(base) - keep]
        return text if jaccard(base, text) <= 0.5 else None


@dataclass
class NearCorpus:
    texts: list[str]
    ids: list[str]
    # For each planted near-duplicate, the record_id of its base; None for every other row.
    base_of: list[str | None]


def _near_corpus(seed: int = 11, bases: int = 3000) -> NearCorpus:
    rng = random.Random(seed)
    writer = _Writer(rng)
    # (stream position, record id, text, base record id of a planted near-duplicate)
    placed: list[tuple[float, str, str, str | None]] = []
    for b in range(bases):
        chinese = b % 3 == 0
        base = writer.document(chinese)
        placed.append((b, f"b{b}", base, None))
        for make, share, is_near in ((writer.near, 0.35, True), (writer.far, 0.12, False)):
            variant = make(base, chinese) if rng.random() < share else None
            if variant is not None:
                at = rng.uniform(b + 0.1, bases)
                name = f"{'v' if is_near else 'f'}{len(placed)}"
                placed.append((at, name, variant, f"b{b}" if is_near else None))
    placed.sort(key=lambda p: p[0])
    return NearCorpus([p[2] for p in placed], [p[1] for p in placed], [p[3] for p in placed])


@pytest.fixture(scope="module")
def corpus() -> NearCorpus:
    return _near_corpus()


@pytest.fixture(scope="module")
def default_run(corpus: NearCorpus, tmp_path_factory: pytest.TempPathFactory) -> Result:
    step = near_dedup(NearDedupParams(), _ctx(tmp_path_factory.mktemp("near")))
    return _run(step, corpus.texts, corpus.ids, batch_rows=512)


# --- near_dedup -----------------------------------------------------------------------------------


def test_near_dedup_precision_and_recall(corpus: NearCorpus, default_run: Result) -> None:
    planted = sum(b is not None for b in corpus.base_of)
    flagged = [i for i, r in enumerate(default_run.reasons) if r is not None]
    correct = [
        i
        for i in flagged
        if corpus.base_of[i] is not None and default_run.clusters[i] == corpus.base_of[i]
    ]
    far = [i for i, rid in enumerate(corpus.ids) if rid.startswith("f")]
    assert planted > 800 and len(far) > 300 and len(corpus.texts) > 3500
    assert [default_run.reasons[i] for i in far] == [None] * len(far)
    assert len(correct) / len(flagged) >= 0.95  # precision
    assert len(correct) / planted >= 0.95  # recall
    for i in correct:
        reason = f"near duplicate of {corpus.base_of[i]} " + r"\(jaccard ~(0\.[7-9]\d|1\.00)\)"
        assert re.fullmatch(reason, default_run.reasons[i] or "")
    assert default_run.totals["duplicates"] == len(flagged) == default_run.counts
    assert default_run.totals["clusters"] == len({default_run.clusters[i] for i in flagged})


@pytest.mark.slow
def test_near_dedup_ignores_batch_size_and_spilling(
    corpus: NearCorpus, default_run: Result, tmp_path: Path
) -> None:
    expected = (default_run.reasons, default_run.clusters, default_run.totals)
    for rows, memory_mb in ((64, 256.0), (4096, 256.0), (300, 0.0)):
        workdir = tmp_path / f"{rows}-{memory_mb}"
        workdir.mkdir()
        step = near_dedup(NearDedupParams(memory_mb=memory_mb), _ctx(workdir))
        result = _run(step, corpus.texts, corpus.ids, rows)
        assert (result.reasons, result.clusters, result.totals) == expected, (rows, memory_mb)
        assert not any(workdir.iterdir())


def test_near_dedup_spills_into_the_workdir(corpus: NearCorpus, tmp_path: Path) -> None:
    step = near_dedup(NearDedupParams(memory_mb=0.05), _ctx(tmp_path))
    for start in range(0, 2000, 500):
        step(_batch(corpus.texts[start : start + 500], corpus.ids[start : start + 500]))
    assert any(p.is_file() for p in tmp_path.rglob("*"))
    step.close()
    assert not any(tmp_path.iterdir())


def test_near_dedup_tag_keeps_rows_and_sets_cluster(
    corpus: NearCorpus, default_run: Result, tmp_path: Path
) -> None:
    step = near_dedup(NearDedupParams(action="tag"), _ctx(tmp_path))
    tagged = _run(step, corpus.texts, corpus.ids, 512)
    assert tagged.reasons == [None] * len(corpus.texts)
    assert tagged.clusters == default_run.clusters
    assert tagged.totals == default_run.totals


def test_near_dedup_is_deterministic(corpus: NearCorpus, tmp_path: Path) -> None:
    texts, ids = corpus.texts[:1500], corpus.ids[:1500]
    runs = [
        _run(near_dedup(NearDedupParams(seed=5), _ctx(tmp_path / str(i))), texts, ids, 256)
        for i in range(2)
    ]
    assert runs[0] == runs[1]
    assert sum(r is not None for r in runs[0].reasons) > 100


def test_near_dedup_short_and_empty_texts(tmp_path: Path) -> None:
    texts = ["hi", "ho", "hi!", "", "", "Hi", "a much longer text than five"]
    result = _run(near_dedup(NearDedupParams(), _ctx(tmp_path)), texts, list("abcdefg"), 3)
    assert result.reasons[:3] == [None, None, "near duplicate of a (jaccard ~1.00)"]
    assert result.reasons[3:] == [
        None,
        "near duplicate of d (jaccard ~1.00)",
        result.reasons[5],
        None,
    ]
    assert result.reasons[5] == "near duplicate of a (jaccard ~1.00)"


def test_near_dedup_finds_duplicates_in_templated_text(tmp_path: Path) -> None:
    """Texts sharing a long template share the buckets the template decides, which the first
    of them owns; their near-duplicates must still find them through the other buckets."""
    rng = random.Random(3)
    writer = _Writer(rng)
    template = writer.document(chinese=False)[:200]
    bases = [template + " " + writer.document(chinese=False)[:110] for _ in range(400)]
    assert jaccard(bases[0], bases[1]) < 0.65
    nears = [writer.near(b, chinese=False) for b in bases[200:]]
    pairs = [(b, n) for b, n in zip(bases[200:], nears, strict=True) if n is not None]
    texts = bases + [n for _, n in pairs]
    ids = [f"b{i}" for i in range(len(bases))] + [f"n{i}" for i in range(len(pairs))]
    result = _run(near_dedup(NearDedupParams(), _ctx(tmp_path)), texts, ids, 256)
    assert result.reasons[: len(bases)] == [None] * len(bases)
    found = [
        r is not None and r.startswith(f"near duplicate of b{bases.index(b)} ")
        for (b, _), r in zip(pairs, result.reasons[len(bases) :], strict=True)
    ]
    assert sum(found) / len(pairs) >= 0.95


def test_lsh_params_make_misses_rare() -> None:
    bands, rows = dedup.lsh_params(0.7, 128)
    assert bands * rows <= 128

    def s_curve(s: float) -> float:
        return float(1 - (1 - s**rows) ** bands)

    assert s_curve(0.8) >= 0.99
    assert s_curve(0.3) <= 0.05
    assert dedup.lsh_params(0.9, 64)[1] > rows  # a higher threshold asks for longer bands


def test_near_dedup_params_defaults() -> None:
    p = NearDedupParams()
    assert (p.ngram, p.num_perm, p.threshold, p.action, p.memory_mb) == (5, 128, 0.7, "drop", 256)
    with pytest.raises(ValueError):
        NearDedupParams(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        NearDedupParams(threshold=1.5)


def test_signatures_estimate_jaccard(corpus: NearCorpus) -> None:
    """The estimate the reason reports tracks the true Jaccard of the normalized texts."""
    a, b = dedup._permutations(256, 1)
    pairs = [
        (t, corpus.texts[corpus.ids.index(base)])
        for t, base in zip(corpus.texts, corpus.base_of, strict=True)
        if base
    ][:200]
    left = pa.array([p[0] for p in pairs], pa.large_string())
    right = pa.array([p[1] for p in pairs], pa.large_string())
    params = NearDedupParams()
    nl, nr = dedup.normalize_for_dedup(left, params), dedup.normalize_for_dedup(right, params)
    sl = dedup.minhash_signatures(nl, 5, a, b)
    sr = dedup.minhash_signatures(nr, 5, a, b)
    estimate = (sl == sr).mean(axis=1)
    truth = np.array([jaccard(x, y) for x, y in zip(nl.to_pylist(), nr.to_pylist(), strict=True)])
    assert np.abs(estimate - truth).mean() < 0.03
    assert np.abs(estimate - truth).max() < 0.15
