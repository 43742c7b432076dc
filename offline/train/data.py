"""Training examples, the batch collator and the data order that a resume continues exactly.

Three tasks read the split (or labeled) Parquet/JSONL files of the workspace:

- ``sft``: a ``messages`` column (conversations) or ``instruction``/``response`` (with an
  optional ``system``) through the tokenizer's chat template; the loss sees only the
  assistant's tokens (``return_assistant_tokens_mask``), everything else is ``-100``;
- ``pretrain``: plain text, every token is a target;
- ``classification``: text and a label from the configured label set.

:class:`DataOrder` maps a global sample position to an example: epoch ``p // n`` in a permutation
seeded by ``seed + epoch``. A checkpoint stores only the position (and the windows a spike
rollback skipped), so a resumed run sees exactly the samples the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.errors import DataError, NotFoundError
from offline.fsutil import atomic_writer

IGNORE = -100  # label value the loss skips


@dataclass
class Example:
    input_ids: Sequence[int]
    labels: Sequence[int] | int  # per-token targets (LM tasks) or a class index
    # A packed row: the lengths of the examples it holds, in order (positions restart at each,
    # and no token attends across them). None: one example.
    segments: Sequence[int] | None = None


@dataclass
class Dataset:
    examples: Sequence[Example]
    dropped: int = 0  # rows with nothing to learn from
    label_names: list[str] = field(default_factory=list)
    dropped_by: dict[str, int] = field(default_factory=dict)  # reason -> rows
    rows: int = 0  # examples before packing
    first_problem: dict[str, str] = field(default_factory=dict)  # reason -> an example's detail


def read_table(path: Path) -> Any:
    """A Parquet file, a directory of Parquet shards, or a JSONL file, as an Arrow table."""
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    if not path.exists():
        raise NotFoundError(f"{path} does not exist", fix="run `dvc repro` to make the split")
    try:
        if path.is_dir():
            shards = sorted(path.glob("*.parquet"))
            if not shards:
                raise DataError(f"{path} holds no .parquet files")
            return pa.concat_tables([pq.read_table(s) for s in shards], promote_options="default")
        if path.suffix in (".jsonl", ".json"):
            return pj.read_json(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def column_texts(table: Any, column: str | None, path: Path) -> list[str]:
    names = table.schema.names
    if column is not None:
        if column not in names:
            raise DataError(
                f"{path} has no column {column!r} (columns: {', '.join(names)})",
                fix="set data.text_column to one of them",
            )
        return [v or "" for v in table.column(column).to_pylist()]
    if "text" in names:
        return [v or "" for v in table.column("text").to_pylist()]
    if "record_id" in names:  # a canonical table of another kind: all of its text
        from offline.data.records import joined_text

        return [t or "" for t in joined_text(table.combine_chunks().to_batches()[0])]
    raise DataError(
        f"{path} has no text column (columns: {', '.join(names)})",
        fix="set data.text_column",
    )


def _conversations(table: Any, path: Path) -> list[list[dict[str, str]]]:
    names = table.schema.names
    if "messages" in names:
        return [
            [_message(m) for m in (row or []) if isinstance(m, dict)]
            for row in table.column("messages").to_pylist()
        ]
    if "instruction" in names and "response" in names:
        n = len(table)
        system = table.column("system").to_pylist() if "system" in names else [None] * n
        thought = table.column("reasoning").to_pylist() if "reasoning" in names else [None] * n
        rows = zip(
            system,
            table.column("instruction").to_pylist(),
            table.column("response").to_pylist(),
            thought,
            strict=True,
        )
        return [
            ([{"role": "system", "content": s}] if s else [])
            + [
                {"role": "user", "content": i or ""},
                _message({"role": "assistant", "content": r, "reasoning_content": t}),
            ]
            for s, i, r, t in rows
        ]
    raise DataError(
        f"{path}: task sft needs a messages column or instruction + response columns"
        f" (columns: {', '.join(names)})",
        fix="point data.train at a conversation or instruction dataset, or use task: pretrain",
    )


def _message(m: dict[str, Any]) -> dict[str, str]:
    out = {"role": str(m.get("role") or ""), "content": str(m.get("content") or "")}
    if m.get("reasoning_content"):
        out["reasoning_content"] = str(m["reasoning_content"])
    return out


def load_dataset(
    path: Path,
    task: str,
    tok: Any,
    *,
    max_length: int,
    text_column: str | None = None,
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    reasoning: bool = True,
    packing: bool = False,
) -> Dataset:
    """Tokenize ``path`` for ``task``; with ``packing``, LM examples share rows of ``max_length``.

    Raises:
        NotFoundError: ``path`` is missing.
        DataError: the file is empty, lacks the task's columns, or holds labels outside
            ``label_names``.
        TemplateError: task ``sft`` with a chat template that cannot be masked.
    """
    table = read_table(path)
    if table.num_rows == 0:
        raise DataError(f"{path} has no rows", fix="check the split and cleaning metrics")
    if task == "sft":
        data = _sft(_conversations(table, path), tok, max_length, reasoning)
        return pack(data, max_length) if packing else data
    texts = column_texts(table, text_column, path)
    if task == "pretrain":
        data = _pretrain(texts, tok, max_length)
        return pack(data, max_length) if packing else data
    if label_column not in table.schema.names:
        raise DataError(
            f"{path} has no label column {label_column!r}"
            f" (columns: {', '.join(table.schema.names)})",
            fix="set data.label_column, or train on data/labeled from `offline label pull`",
        )
    labels = [None if v is None else str(v) for v in table.column(label_column).to_pylist()]
    names = list(label_names) if label_names else sorted({v for v in labels if v is not None})
    unknown = sorted({v for v in labels if v is not None and v not in names})
    if unknown:
        raise DataError(
            f"{path}: labels not in the label set: {', '.join(unknown)}"
            f" (label set: {', '.join(names)})",
            fix="add them to data.labels or relabel those rows",
        )
    index = {name: i for i, name in enumerate(names)}
    enc = tok(texts, truncation=True, max_length=max_length)
    examples = [
        Example(ids, index[label])
        for ids, label in zip(enc["input_ids"], labels, strict=True)
        if label is not None and ids
    ]
    if not examples:
        raise DataError(f"{path}: no row has both text and a label")
    return Dataset(examples, dropped=len(texts) - len(examples), label_names=names)


def _sft(
    conversations: list[list[dict[str, str]]], tok: Any, max_length: int, reasoning: bool
) -> Dataset:
    from offline.train.chat import Dropped, encode_conversation, mask_method

    method = mask_method(tok)  # a template that cannot be masked stops here, saying why
    examples: list[Example] = []
    dropped_by: dict[str, int] = {}
    first: dict[str, str] = {}
    for messages in conversations:
        try:
            ids, labels = encode_conversation(
                tok, messages, max_length=max_length, reasoning=reasoning, method=method
            )
        except Dropped as exc:
            dropped_by[exc.reason] = dropped_by.get(exc.reason, 0) + 1
            first.setdefault(exc.reason, exc.detail)
            continue
        examples.append(Example(ids, labels))
    return Dataset(
        examples,
        dropped=len(conversations) - len(examples),
        dropped_by=dropped_by,
        rows=len(examples),
        first_problem=first,
    )


def _pretrain(texts: list[str], tok: Any, max_length: int) -> Dataset:
    """Whole documents, each cut into pieces of ``max_length`` (nothing past it is lost)."""
    enc = tok([t + tok.eos_token for t in texts if t], add_special_tokens=True)
    examples = []
    for ids in enc["input_ids"]:
        for start in range(0, len(ids), max_length):
            piece = list(ids[start : start + max_length])
            if len(piece) > 1:  # a single token predicts nothing
                examples.append(Example(piece, list(piece)))
    empty = sum(1 for t in texts if not t)
    return Dataset(
        examples,
        dropped=empty,
        dropped_by={"empty": empty} if empty else {},
        rows=len(examples),
    )


def pack(data: Dataset, width: int) -> Dataset:
    """Examples into rows of at most ``width`` tokens, best fit by decreasing length.

    Deterministic (ties keep the data's order); each row keeps its examples' lengths so
    :func:`collate` restarts positions and keeps attention inside each one. The first label
    of every example is ignored: nothing in the row before it is its context.
    """
    import bisect

    order = sorted(range(len(data.examples)), key=lambda i: -len(data.examples[i].input_ids))
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row) sorted
    for i in order:
        size = len(data.examples[i].input_ids)
        at = bisect.bisect_left(room, (size, -1))
        if at < len(room):
            free, row = room.pop(at)
            rows[row].append(i)
            bisect.insort(room, (free - size, row))
        else:
            rows.append([i])
            bisect.insort(room, (width - size, len(rows) - 1))
    packed = []
    for members in sorted(rows, key=min):  # rows in the order of their first example
        members.sort()
        ids: list[int] = []
        labels: list[int] = []
        for i in members:
            e = data.examples[i]
            assert isinstance(e.labels, Sequence)
            ids += list(e.input_ids)
            labels += [IGNORE, *list(e.labels)[1:]]
        packed.append(Example(ids, labels, [len(data.examples[i].input_ids) for i in members]))
    return Dataset(
        packed,
        dropped=data.dropped,
        label_names=data.label_names,
        dropped_by=data.dropped_by,
        rows=len(data.examples),
        first_problem=data.first_problem,
    )


class StoredExamples(Sequence[Example]):
    """Examples read straight from a memory-mapped Arrow file (see :func:`save_examples`):
    ranks on one host share its pages instead of each holding Python lists."""

    def __init__(self, table: Any) -> None:
        def flat(name: str) -> tuple[Any, Any]:
            column = table.column(name).combine_chunks()
            return column.offsets.to_numpy(), column.values.to_numpy()

        self._n = int(table.num_rows)
        self._ids = flat("input_ids")
        names = table.schema.names
        self._labels = flat("labels") if table.schema.field("labels").type != "int32" else None
        self._classes = None if self._labels else table.column("labels").to_numpy()
        self._segments = flat("segments") if "segments" in names else None

    def __len__(self) -> int:
        return self._n

    def _one(self, i: int) -> Example:
        def cut(pair: tuple[Any, Any]) -> Any:
            offsets, values = pair
            return values[offsets[i] : offsets[i + 1]]

        labels = cut(self._labels) if self._labels else int(self._classes[i])  # type: ignore[index]
        segments = cut(self._segments) if self._segments else None
        return Example(cut(self._ids), labels, segments)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._one(i) for i in range(*index.indices(self._n))]
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError(index)
        return self._one(index)


def save_examples(data: Dataset, path: Path) -> None:
    """``data`` as an Arrow IPC file at ``path`` (written aside, then renamed into place)."""
    import json

    import pyarrow as pa

    lists = pa.list_(pa.int32())
    columns: dict[str, Any] = {
        "input_ids": pa.array([list(e.input_ids) for e in data.examples], type=lists)
    }
    if data.examples and isinstance(data.examples[0].labels, int):
        columns["labels"] = pa.array([e.labels for e in data.examples], type=pa.int32())
    else:
        columns["labels"] = pa.array([list(e.labels) for e in data.examples], type=lists)  # type: ignore[arg-type]
    if any(e.segments is not None for e in data.examples):
        columns["segments"] = pa.array(
            [
                list(e.segments) if e.segments is not None else [len(e.input_ids)]
                for e in data.examples
            ],
            type=lists,
        )
    meta = {
        "dropped": data.dropped,
        "label_names": data.label_names,
        "dropped_by": data.dropped_by,
        "rows": data.rows,
        "first_problem": data.first_problem,
    }
    table = pa.table(columns).replace_schema_metadata({"dataset": json.dumps(meta)})
    with atomic_writer(path) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))


def open_examples(path: Path) -> Dataset:
    """A :class:`Dataset` over the memory-mapped file :func:`save_examples` wrote."""
    import json

    import pyarrow as pa

    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    meta = json.loads(table.schema.metadata[b"dataset"])
    return Dataset(StoredExamples(table), **meta)


def collate(examples: Sequence[Example], pad_id: int, task: str) -> dict[str, Any]:
    """Right-pad to the longest example; padding is masked out of attention and the loss.

    Packed rows (see :func:`pack`) get ``position_ids`` that restart at every example and no
    ``attention_mask``: transformers then keeps attention inside each example.
    """
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = _tensor(e.input_ids)
        attention[row, : len(e.input_ids)] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": attention}
    if task == "classification":
        batch["labels"] = torch.tensor([int(e.labels) for e in examples])  # type: ignore[arg-type]
        return batch
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        assert not isinstance(e.labels, int)
        labels[row, : len(e.labels)] = _tensor(e.labels)
    batch["labels"] = labels
    if any(e.segments is not None for e in examples):
        positions = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            lengths = list(e.segments) if e.segments is not None else [len(e.input_ids)]
            if width > sum(lengths):
                lengths.append(width - sum(lengths))  # the padding is a segment of its own
            positions[row] = torch.cat([torch.arange(n) for n in lengths])
        batch["position_ids"] = positions
        del batch["attention_mask"]
    return batch


def _tensor(values: Sequence[int]) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.array(values, dtype=np.int64))  # a copy: stored pages stay read-only


def real_tokens(examples: Sequence[Example]) -> int:
    """Tokens of a batch of ``examples`` that are not padding."""
    return sum(len(e.input_ids) for e in examples)


def target_tokens(batch: dict[str, Any], task: str) -> int:
    """Tokens the loss is computed on (classification: one per row)."""
    if task == "classification":
        return int(batch["labels"].numel())
    return int((batch["labels"][:, 1:] != IGNORE).sum())


@dataclass
class DataOrder:
    """Global sample positions -> example indices; the run's whole data order in a few ints.

    ``skip`` holds half-open position windows a spike rollback excluded; they stay excluded
    for the rest of the run, resumes included.
    """

    size: int
    seed: int
    shuffle: bool = True
    position: int = 0
    skip: list[tuple[int, int]] = field(default_factory=list)
    _perm: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def _index(self, pos: int) -> int:
        epoch, offset = divmod(pos, self.size)
        if not self.shuffle:
            return offset
        if epoch not in self._perm:
            import torch

            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = {epoch: torch.randperm(self.size, generator=gen).tolist()}
        return self._perm[epoch][offset]

    def take(self, count: int) -> tuple[list[int], tuple[int, int]]:
        """The next ``count`` example indices and the position window they came from."""
        start = self.position
        out: list[int] = []
        pos = start
        while len(out) < count:
            window = next((w for w in self.skip if w[0] <= pos < w[1]), None)
            if window is not None:
                pos = window[1]
                continue
            out.append(self._index(pos))
            pos += 1
        self.position = pos
        return out, (start, pos)

    def state(self) -> dict[str, Any]:
        return {"position": self.position, "skip": [list(w) for w in self.skip]}

    def restore(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        windows = {tuple(w) for w in self.skip} | {tuple(w) for w in state.get("skip", [])}
        self.skip = sorted((int(a), int(b)) for a, b in windows)
