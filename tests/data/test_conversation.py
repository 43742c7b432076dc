"""The conversation step: roles, alternation, empty turns, turn counts, the reason's turn index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from offline.data.records import schema_for
from offline.data.steps.base import Context
from offline.data.steps.conversation import ConversationParams, conversation
from tests.data.batches import make_batch

Turns = list[tuple[str, str | None]]

GOOD: Turns = [
    ("user", "My order 5510293 has not arrived."),
    ("assistant", "Sorry about that, let me check the tracking for you."),
    ("user", "谢谢, 收到了"),
    ("assistant", "The parcel is at the local depot and will arrive tomorrow."),
]


def run(rows: list[Turns | None], **params: Any) -> tuple[list[str | None], pa.RecordBatch]:
    step = conversation(ConversationParams(**params), Context(Path("."), "chats", "conversation"))
    out = step(make_batch("conversation", rows))
    assert out.batch.num_rows == len(rows)
    assert out.batch.schema == schema_for("conversation")
    return out.reasons, out.batch


def test_applies_to_conversations_only() -> None:
    step = conversation(ConversationParams(), Context(Path("."), "chats", "conversation"))
    assert step.kinds == ("conversation",)


def test_well_formed_conversations_pass_untouched() -> None:
    with_system: Turns = [("system", "You are a support agent."), *GOOD]
    reasons, batch = run([GOOD, with_system, GOOD[:2]])
    assert reasons == [None, None, None]
    assert (
        batch.column("messages").to_pylist()
        == make_batch("conversation", [GOOD, with_system, GOOD[:2]]).column("messages").to_pylist()
    )


@pytest.mark.parametrize(
    ("turns", "reason"),
    [
        (
            [("user", "hi"), ("user", "hello?"), ("assistant", "yes")],
            "broken alternation: expected assistant at turn 1, got user",
        ),
        (
            [("assistant", "Welcome!"), ("user", "hi"), ("assistant", "hello")],
            "broken alternation: expected user at turn 0, got assistant",
        ),
        (
            [("system", "s"), ("user", "a"), ("assistant", "b"), ("assistant", "c")],
            "broken alternation: expected user at turn 3, got assistant",
        ),
        (
            [("user", "hi"), ("bot", "hello"), ("assistant", "ok")],
            "role not allowed: 'bot' at turn 1 (allowed: system, user, assistant)",
        ),
        (
            [("user", "hi"), ("assistant", "hello"), ("system", "be brief"), ("user", "ok")],
            "system message not first: turn 2",
        ),
        ([("user", "hi")], "too few turns: 1 < 2"),
        ([("system", "s")], "too few turns: 0 < 2"),
        (
            [("user", "hi"), ("assistant", "hello"), ("user", "bye")],
            "last turn not assistant: turn 2 is user",
        ),
        (None, "no messages"),
        ([], "no messages"),
    ],
)
def test_broken_conversations_name_the_problem_and_turn(turns: Turns | None, reason: str) -> None:
    reasons, _ = run([GOOD, turns, GOOD])
    assert reasons == [None, reason, None]


def test_too_many_turns() -> None:
    long: Turns = [("user", "q"), ("assistant", "a")] * 20
    assert run([long])[0] == ["too many turns: 40 > 32"]
    assert run([long], max_turns=40)[0] == [None]


def test_the_first_problem_wins() -> None:
    turns: Turns = [("user", "a"), ("user", "b"), ("robot", "c"), ("user", "d")]
    assert run([turns])[0] == ["broken alternation: expected assistant at turn 1, got user"]


def test_empty_turns_are_dropped_and_counted() -> None:
    rows: list[Turns | None] = [
        [("user", "hi"), ("assistant", "  "), ("assistant", "hello"), ("user", "\n")],
        [
            ("system", ""),
            ("user", "q"),
            ("assistant", None),
            ("assistant", "a"),
            ("user", "q2"),
            ("assistant", "a2"),
        ],
        GOOD,
    ]
    step = conversation(ConversationParams(), Context(Path("."), "chats", "conversation"))
    out = step(make_batch("conversation", rows))
    assert out.counts == {"empty_turns_dropped": 4}
    assert out.reasons == [None, None, None]
    messages = out.batch.column("messages").to_pylist()
    assert messages[0] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert [m["content"] for m in messages[1]] == ["q", "a", "q2", "a2"]
    assert messages[2] == make_batch("conversation", [GOOD]).column("messages").to_pylist()[0]


def test_dropping_empty_turns_can_break_alternation_reported_at_the_input_index() -> None:
    turns: Turns = [("user", "hi"), ("assistant", ""), ("user", "anyone?"), ("assistant", "yes")]
    assert run([turns])[0] == ["broken alternation: expected assistant at turn 2, got user"]


def test_empty_turns_can_reject_the_row_instead() -> None:
    turns: Turns = [("user", "hi"), ("assistant", "hello"), ("user", " "), ("assistant", "ok")]
    reasons, batch = run([turns, GOOD], empty_turns="reject")
    assert reasons == ["empty turn: turn 2", None]
    assert len(batch.column("messages").to_pylist()[0]) == 4


def test_alternation_and_last_turn_rules_can_be_relaxed() -> None:
    tool_use: Turns = [
        ("user", "weather in Paris?"),
        ("assistant", "calling the weather tool"),
        ("tool", '{"temp": 21}'),
        ("assistant", "It is 21 degrees."),
        ("user", "thanks"),
    ]
    assert run([tool_use])[0] == [
        "role not allowed: 'tool' at turn 2 (allowed: system, user, assistant)"
    ]
    relaxed = {
        "roles": ["system", "user", "assistant", "tool"],
        "require_alternation": False,
        "last_turn_assistant": False,
    }
    assert run([tool_use], **relaxed)[0] == [None]
    strict_order = {"roles": ["system", "user", "assistant", "tool"]}
    assert run([tool_use], **strict_order)[0] == [
        "broken alternation: expected user at turn 2, got tool"
    ]
    tool_first: Turns = [("user", "q"), ("tool", "{}"), ("assistant", "a")]
    assert run([tool_first], **strict_order)[0] == [
        "broken alternation: expected assistant at turn 1, got tool"
    ]


def test_sliced_batches_keep_their_rows_aligned() -> None:
    rows: list[Turns | None] = [
        [("user", "x")],
        [("user", "a"), ("assistant", ""), ("assistant", "b")],
        None,
        [("user", "c"), ("user", "d"), ("assistant", "e")],
    ]
    step = conversation(ConversationParams(), Context(Path("."), "chats", "conversation"))
    out = step(make_batch("conversation", rows).slice(1))
    assert out.reasons == [
        None,
        "no messages",
        "broken alternation: expected assistant at turn 1, got user",
    ]
    messages = out.batch.column("messages").to_pylist()
    assert messages[0] == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert messages[1] is None
    assert len(messages[2]) == 3
