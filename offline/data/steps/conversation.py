"""Conversation structure: allowed roles, system first, user/assistant alternation, turn counts.

Reasons read "<problem>: <details>", so the runner can tally them by problem. Turn indexes are
0-based positions in the record's ``messages`` list as read (before empty turns are dropped):
"broken alternation: expected assistant at turn 3, got user" points at ``messages[3]`` of the
input row. A "turn" in the min/max counts is a non-system message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from offline.config import Strict
from offline.data.records import MESSAGE
from offline.data.steps.base import Context, Outcome, Step, StepSpec
from offline.data.steps.text import list_parts, row_ids

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


class ConversationParams(Strict):
    """Structural rules for ``messages``; each failing row is rejected with its first problem."""

    roles: list[str] = Field(default_factory=lambda: ["system", "user", "assistant"])
    """Allowed roles (compared exactly)."""
    require_alternation: bool = True
    """After an optional first system message: user, assistant, user, ... (off for tool roles)."""
    empty_turns: Literal["drop_turn", "reject"] = "drop_turn"
    """A message with empty or whitespace-only content: remove it, or reject the whole row."""
    min_turns: int = Field(2, ge=0)
    """Fewest non-system messages."""
    max_turns: int = Field(32, ge=1)
    """Most non-system messages."""
    last_turn_assistant: bool = True
    """The last message must come from the assistant (something to learn to answer)."""


def _mask(values: pa.Array) -> BoolArray:
    out: BoolArray = pc.fill_null(values, False).to_numpy(zero_copy_only=False)
    return out


def _rank(flags: BoolArray, rows: IntArray, offsets: IntArray) -> IntArray:
    """0-based position of each flagged message among the flagged messages of its row."""
    seen = np.concatenate([[0], np.cumsum(flags)])
    rank: IntArray = seen[:-1] - seen[offsets[rows]]
    return rank


@dataclass
class _Messages:
    """One batch's messages, flattened, with what the rules need per message."""

    offsets: IntArray
    values: pa.Array
    rows: IntArray
    index: IntArray  # position in the row's messages list
    roles: pa.Array
    present: BoolArray  # the row's list is not null
    empty: BoolArray

    @classmethod
    def of(cls, col: pa.ListArray) -> _Messages:
        offsets, values = list_parts(col)
        rows = row_ids(offsets)
        content = values.field("content")
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(content)), 0)
        present: BoolArray = col.is_valid().to_numpy(zero_copy_only=False)[rows]
        return cls(
            offsets=offsets,
            values=values,
            rows=rows,
            index=np.arange(len(rows), dtype=np.int64) - offsets[rows],
            roles=values.field("role"),
            present=present,
            empty=_mask(pc.or_kleene(content.is_null(), blank)),
        )

    def role_is(self, role: str) -> BoolArray:
        return _mask(pc.equal(self.roles, role))

    def role_in(self, roles: list[str]) -> BoolArray:
        return _mask(pc.is_in(self.roles, value_set=pa.array(roles, pa.string())))

    def role_at(self, pos: int) -> str | None:
        role: str | None = self.roles[pos].as_py()
        return role


class _Conversation:
    name = "conversation"
    kinds: tuple[str, ...] = ("conversation",)

    def __init__(self, params: ConversationParams) -> None:
        self.p = params

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        col = batch.column("messages")
        m = _Messages.of(col)
        drop = m.empty & m.present if self.p.empty_turns == "drop_turn" else np.zeros_like(m.empty)
        kept = m.present & ~drop
        reasons = self._turn_problems(m, kept, batch.num_rows)
        self._count_problems(m, kept, reasons)
        counts = {"empty_turns_dropped": int(drop.sum())}
        if not drop.any():
            return Outcome(batch, reasons, counts)
        return Outcome(_rebuild(batch, col, m, kept), reasons, counts)

    def _turn_problems(self, m: _Messages, kept: BoolArray, n_rows: int) -> list[str | None]:
        """The first per-message problem of each row, by position."""
        allowed = m.role_in(self.p.roles)
        system = m.role_is("system")
        checks: list[BoolArray] = []
        if self.p.empty_turns == "reject":
            checks.append(m.empty & kept)
        checks += [~allowed & kept, system & kept & (_rank(kept, m.rows, m.offsets) > 0)]
        if self.p.require_alternation:
            chat = kept & ~system & allowed
            expect_user = _rank(kept & ~system, m.rows, m.offsets) % 2 == 0
            checks.append(chat & expect_user & ~m.role_is("user"))
            checks.append(chat & ~expect_user & ~m.role_is("assistant"))
        reasons: list[str | None] = [None] * n_rows
        failing: list[int] = np.flatnonzero(np.logical_or.reduce(checks)).tolist()
        for pos in failing:
            row = int(m.rows[pos])
            if reasons[row] is None:
                reasons[row] = self._describe(m, pos, [bool(c[pos]) for c in checks])
        return reasons

    def _describe(self, m: _Messages, pos: int, hits: list[bool]) -> str:
        i, role = int(m.index[pos]), m.role_at(pos)
        kinds = ["empty"] if self.p.empty_turns == "reject" else []
        kind = [*kinds, "role", "system", "user", "assistant"][hits.index(True)]
        if kind == "empty":
            return f"empty turn: turn {i}"
        if kind == "role":
            return f"role not allowed: {role!r} at turn {i} (allowed: {', '.join(self.p.roles)})"
        if kind == "system":
            return f"system message not first: turn {i}"
        return f"broken alternation: expected {kind} at turn {i}, got {role}"

    def _count_problems(self, m: _Messages, kept: BoolArray, reasons: list[str | None]) -> None:
        n = len(reasons)
        chat = kept & ~m.role_is("system")
        turns = np.bincount(m.rows[chat], minlength=n)
        last = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last, m.rows[kept], np.flatnonzero(kept))
        for row in range(n):
            if reasons[row] is None:
                reasons[row] = self._row_problem(m, int(turns[row]), int(last[row]))

    def _row_problem(self, m: _Messages, turns: int, last: int) -> str | None:
        p = self.p
        if last < 0:
            return "no messages"
        if turns < p.min_turns:
            return f"too few turns: {turns} < {p.min_turns}"
        if turns > p.max_turns:
            return f"too many turns: {turns} > {p.max_turns}"
        role = m.role_at(last)
        if p.last_turn_assistant and role != "assistant":
            return f"last turn not assistant: turn {int(m.index[last])} is {role}"
        return None

    def close(self) -> dict[str, int]:
        return {}


def _rebuild(
    batch: pa.RecordBatch, col: pa.ListArray, m: _Messages, kept: BoolArray
) -> pa.RecordBatch:
    """``batch`` with only the ``kept`` messages (null lists stay null)."""
    per_row = np.bincount(m.rows[kept], minlength=batch.num_rows)
    offsets = pa.array(np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32))
    values = m.values.filter(pa.array(kept))
    messages = pa.ListArray.from_arrays(offsets, values, type=pa.list_(MESSAGE), mask=col.is_null())
    columns = list(batch.columns)
    columns[batch.schema.get_field_index("messages")] = messages
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def conversation(params: ConversationParams, ctx: Context) -> Step:
    """Build the ``conversation`` step (conversation datasets only).

    Checks, per row: allowed roles, system only first, user/assistant alternation starting with
    user, empty turns (dropped and counted as ``empty_turns_dropped``, or rejected), the number
    of non-system turns, and that the last turn is the assistant's. The reason names the first
    problem and its 0-based turn index, e.g. "broken alternation: expected assistant at turn 2,
    got user"; the part before the colon is the problem's stable name.
    """
    return _Conversation(params)


STEPS = (StepSpec("conversation", ConversationParams, conversation, order=40),)
