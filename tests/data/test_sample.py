"""``offline data sample``: the files are deterministic and SAMPLE.json tells the truth about them.

Every check here re-derives the fact independently (own shingles, own MOD 11-2 and Luhn, the
stdlib csv and ipaddress modules) rather than trusting the generator's helpers.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import random
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from offline.data.keywords import CATEGORY_KEYWORDS
from offline.data.sample.files import (
    KEY_FILE,
    MIN_ROWS,
    SENSOR_ROWS,
    SampleManifest,
    generate,
    iter_tickets,
)
from offline.errors import ConfigError

ROWS = 2000
# Fullwidth letters and digits; the block's fullwidth punctuation is ordinary Chinese text.
FULLWIDTH_ALNUM = r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]"
FILES = ("tickets.jsonl", "conversations.jsonl", "sensors.csv", KEY_FILE)
MALFORMED = {"broken_json", "invalid_utf8", "missing_text", "text_number", "text_list", "oversized"}
PII_FORMATS = {
    ("email", "email"),
    ("phone", "cn_mobile"),
    ("phone", "cn_mobile_+86"),
    ("phone", "intl"),
    ("cn_id", "cn_id"),
    ("bank_card", "16"),
    ("bank_card", "16_grouped"),
    ("bank_card", "19"),
    ("bank_card", "19_grouped"),
    ("ipv4", "ipv4"),
    ("ipv6", "ipv6"),
}


# --------------------------------------------------------------------------- independent checks


def shingle_set(text: str, n: int = 5) -> set[str]:
    return {text[i : i + n] for i in range(max(1, len(text) - n + 1))}


def similarity(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def mod11_2_ok(value: str) -> bool:
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    if not re.fullmatch(r"\d{17}[\dX]", value):
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    check = (12 - sum(int(d) * w for d, w in zip(value, weights, strict=False)) % 11) % 11
    return value[17] == ("X" if check == 10 else str(check))


def luhn_ok(number: str) -> bool:
    if not re.fullmatch(r"[\d -]+", number):
        return False
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
    return total % 10 == 0


def apply_edits(text: str, edits: list[dict[str, Any]]) -> str:
    for edit in sorted(edits, key=lambda e: e["at"], reverse=True):
        at = edit["at"]
        text = text[:at] + edit["after"] + text[at + len(edit["before"]) :]
    return text


def conversation_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m.get("content", "") for m in messages)


# --------------------------------------------------------------------------- the sample


@dataclass
class Sample:
    out: Path
    manifest: SampleManifest
    key: dict[str, Any]
    lines: list[bytes]
    tickets: dict[str, dict[str, Any]]
    conversations: dict[str, dict[str, Any]]

    def text_of(self, dataset: str, row_id: str) -> str:
        if dataset == "tickets":
            return str(self.tickets[row_id]["text"])
        return conversation_text(self.conversations[row_id]["messages"])

    def planted_ids(self, *sections: str) -> set[str]:
        ids = {e["id"] for name in sections for e in self.key[name]}
        return ids | {e["id"] for e in self.key["malformed"]}

    def base_tickets(self) -> list[dict[str, Any]]:
        """Tickets that are neither a planted copy nor junk/spam (PII and noise rows count)."""
        skip = self.planted_ids("exact_duplicates", "near_duplicates")
        skip |= {e["id"] for name in ("junk", "spam") for e in self.key["noise"][name]}
        return [t for t in self.tickets.values() if t["id"] not in skip]


def load(out: Path, manifest: SampleManifest) -> Sample:
    key = json.loads((out / KEY_FILE).read_text(encoding="utf-8"))
    lines = (out / "tickets.jsonl").read_bytes().split(b"\n")
    assert lines.pop() == b""
    bad = {e["line"] for e in key["malformed"]}
    tickets = {}
    for number, line in enumerate(lines, start=1):
        if number not in bad:
            record = json.loads(line)
            tickets[record["id"]] = record
    conversations = {}
    for chat in (out / "conversations.jsonl").read_text(encoding="utf-8").split("\n")[:-1]:
        record = json.loads(chat)
        conversations[record["id"]] = record
    return Sample(out, manifest, key, lines, tickets, conversations)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    out = tmp_path_factory.mktemp("sample") / "raw"
    return load(out, generate(out, rows=ROWS, seed=0))


# --------------------------------------------------------------------------- files


def test_same_arguments_give_identical_bytes(sample: Sample, tmp_path: Path) -> None:
    generate(tmp_path / "again", rows=ROWS, seed=0)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (sample.out / name).read_bytes(), name
    generate(tmp_path / "other", rows=ROWS, seed=1)
    other = (tmp_path / "other" / "tickets.jsonl").read_bytes()
    assert other != (sample.out / "tickets.jsonl").read_bytes()


def test_manifest_describes_the_files(sample: Sample) -> None:
    import hashlib

    manifest = sample.manifest
    assert manifest.key == sample.out / KEY_FILE
    assert [f.name for f in manifest.files] == list(FILES[:3])
    for f in manifest.files:
        data = (sample.out / f.name).read_bytes()
        assert f.bytes == len(data) and f.sha256 == hashlib.sha256(data).hexdigest()
        assert sample.key["files"][f.name] == {
            "records": f.records,
            "bytes": f.bytes,
            "sha256": f.sha256,
        }
    counts = {f.name: f.records for f in manifest.files}
    assert counts == {
        "tickets.jsonl": ROWS,
        "conversations.jsonl": ROWS // 2,
        "sensors.csv": SENSOR_ROWS,
    }
    assert len(sample.lines) == ROWS and len(sample.conversations) == ROWS // 2
    as_json = json.loads(json.dumps(manifest.to_dict()))
    assert as_json["planted"] == manifest.planted and as_json["rows"] == ROWS


def test_planted_counts_match_the_key_and_the_brief(sample: Sample) -> None:
    key, planted = sample.key, sample.manifest.planted
    for name in ("exact_duplicates", "near_duplicates", "pii", "decoys", "malformed"):
        assert planted[name] == len(key[name])
    for name, rows in key["noise"].items():
        assert planted[f"noise.{name}"] == len(rows)

    def share(section: list[dict[str, Any]], dataset: str = "tickets") -> float:
        return len({e["id"] for e in section if e["dataset"] == dataset}) / ROWS

    assert 0.025 <= share(key["exact_duplicates"]) <= 0.035
    assert 0.025 <= share(key["near_duplicates"]) <= 0.035
    assert 0.04 <= share(key["pii"]) <= 0.06
    assert 0.008 <= share(key["decoys"]) <= 0.012
    assert 0.015 <= share(key["noise"]["markup"]) <= 0.025
    assert share(key["noise"]["junk"]) + share(key["noise"]["spam"]) == pytest.approx(0.01)
    assert 0.005 <= share(key["malformed"]) <= 0.006
    assert {e["dataset"] for e in key["exact_duplicates"]} == {"tickets", "conversations"}
    assert sum(key["categories"]["tickets"].values()) == len(sample.tickets)


def test_every_planted_row_exists_once_per_role(sample: Sample) -> None:
    key = sample.key
    roles: Counter[str] = Counter()
    for name in ("exact_duplicates", "near_duplicates", "decoys"):
        roles.update(e["id"] for e in key[name])
    roles.update({e["id"] for e in key["pii"]})
    roles.update(e["id"] for rows in key["noise"].values() for e in rows)
    roles.update(e["id"] for e in key["malformed"])
    assert max(roles.values()) == 1, "a row carries two planted roles"
    for entry in [*key["exact_duplicates"], *key["near_duplicates"], *key["pii"]]:
        prefix = "T" if entry["dataset"] == "tickets" else "C"
        assert entry["id"] == f"{prefix}{entry['line']:06d}"


# --------------------------------------------------------------------------- duplicates


def test_exact_duplicates_repeat_an_earlier_original(sample: Sample) -> None:
    variants: Counter[str] = Counter()
    for dup in sample.key["exact_duplicates"]:
        copy = sample.text_of(dup["dataset"], dup["id"])
        original = sample.text_of(dup["dataset"], dup["original"])
        assert int(dup["original"][1:]) < dup["line"]
        variants[dup["variant"]] += 1
        if dup["variant"] == "identical":
            assert copy == original
        elif dup["variant"] == "case":
            assert copy != original and copy.casefold() == original.casefold()
        else:
            assert copy != original and copy.split() == original.split()
    assert set(variants) == {"identical", "case", "whitespace"}


def test_near_duplicates_are_small_edits_above_the_threshold(sample: Sample) -> None:
    ops: Counter[str] = Counter()
    for near in sample.key["near_duplicates"]:
        copy = sample.text_of(near["dataset"], near["id"])
        original = sample.text_of(near["dataset"], near["original"])
        assert len(original) >= 120 and copy != original
        assert 1 <= len(near["edits"]) <= 3
        ops.update(e["op"] for e in near["edits"])
        if near["dataset"] == "tickets":
            assert apply_edits(original, near["edits"]) == copy
        else:
            turn = near["message"]
            before = sample.conversations[near["original"]]["messages"][turn]["content"]
            after = sample.conversations[near["id"]]["messages"][turn]["content"]
            assert apply_edits(before, near["edits"]) == after
        only_punctuation = all(e["op"] == "punctuation" for e in near["edits"])
        assert near["punctuation_only"] == only_punctuation
        if only_punctuation:
            assert re.sub(r"[^\w\s]", "", copy) == re.sub(r"[^\w\s]", "", original)
        score = similarity(shingle_set(copy), shingle_set(original))
        assert near["jaccard"] == pytest.approx(score, abs=1e-4)
        assert score >= 0.8
    assert set(ops) == {"typo", "punctuation", "filler"}


@pytest.mark.slow
def test_base_tickets_are_mutually_dissimilar(sample: Sample) -> None:
    base = sample.base_tickets()
    rng = random.Random(7)
    subset = [shingle_set(t["text"]) for t in rng.sample(base, 300)]
    nearest = max(similarity(a, b) for a, b in combinations(subset, 2))
    assert nearest < 0.5
    every = [shingle_set(t["text"]) for t in base]
    pairs = [rng.sample(range(len(every)), 2) for _ in range(20_000)]
    assert max(similarity(every[i], every[j]) for i, j in pairs) < 0.5


def test_base_conversations_are_mutually_dissimilar(sample: Sample) -> None:
    skip = sample.planted_ids("exact_duplicates", "near_duplicates")
    base = [c for c in sample.conversations.values() if c["id"] not in skip]
    subset = random.Random(3).sample(base, 200)
    sets = [shingle_set(conversation_text(c["messages"])) for c in subset]
    assert max(similarity(a, b) for a, b in combinations(sets, 2)) < 0.5


# --------------------------------------------------------------------------- PII and decoys


def test_pii_values_are_valid_and_embedded(sample: Sample) -> None:
    seen = set()
    for pii in sample.key["pii"]:
        value, kind = pii["value"], pii["type"]
        text = sample.text_of(pii["dataset"], pii["id"])
        at = text.index(value)
        for edge in (text[at - 1 : at], text[at + len(value) : at + len(value) + 1]):
            assert not (edge.isascii() and edge.isalnum()), f"{value} runs into {edge!r}"
        seen.add((kind, pii["format"]))
        digits = re.sub(r"\D", "", value)
        if kind == "cn_id":
            assert mod11_2_ok(value) and not luhn_ok(value)
        elif kind == "bank_card":
            assert luhn_ok(value) and len(digits) == int(pii["format"][:2])
            grouped = pii["format"].endswith("grouped")
            assert (re.fullmatch(r"\d{4}( \d{4})+( \d{3})?", value) is not None) == grouped
        elif kind == "phone" and pii["format"] != "intl":
            assert re.fullmatch(r"(\+86)?1[3-9]\d{9}", digits if "+" not in value else "+" + digits)
        elif kind == "phone":
            assert re.fullmatch(r"\+\d{1,3}( \d+)+", value) and not value.startswith("+86")
        elif kind == "email":
            assert re.fullmatch(r"[a-z0-9._]+@[a-z0-9.-]+\.[a-z]{2,}", value)
        else:
            assert ipaddress.ip_address(value).version == int(kind[-1])
    assert seen == PII_FORMATS
    assert {p["dataset"] for p in sample.key["pii"]} == {"tickets", "conversations"}


def test_decoys_fail_their_checksums(sample: Sample) -> None:
    kinds = set()
    for decoy in sample.key["decoys"]:
        value = decoy["value"]
        assert value in sample.text_of(decoy["dataset"], decoy["id"])
        kinds.add(decoy["type"])
        assert not luhn_ok(value), "a decoy must not pass as a card either"
        if decoy["type"] == "cn_id":
            assert re.fullmatch(r"\d{17}[\dX]", value) and not mod11_2_ok(value)
            fixed = [c for c in "0123456789X" if mod11_2_ok(value[:17] + c)]
            assert len(fixed) == 1, "only the check char is wrong"
        else:
            assert len(re.sub(r"\D", "", value)) in (16, 19)
    assert kinds == {"cn_id", "bank_card"}


def all_texts(sample: Sample) -> list[tuple[str, str]]:
    texts = [(t["id"], t["text"]) for t in sample.tickets.values() if isinstance(t["text"], str)]
    texts += [(c["id"], conversation_text(c["messages"])) for c in sample.conversations.values()]
    return texts


def test_no_checksum_valid_number_goes_unlisted(sample: Sample) -> None:
    planted = {(p["id"], p["value"]) for p in sample.key["pii"]}
    listed = {(p["id"], re.sub(r"\D", "", p["value"])) for p in sample.key["pii"]}
    ids = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dX](?![0-9A-Za-z])")
    cards = re.compile(r"(?<!\d)(?:\d{16}|\d{19}|\d{4}(?: \d{4}){3}(?: \d{3})?)(?!\d)")
    mobiles = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
    emails = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
    for row_id, text in all_texts(sample):
        for m in ids.finditer(text):
            assert not mod11_2_ok(m[0]) or (row_id, m[0]) in planted
        for m in cards.finditer(text):
            assert not luhn_ok(m[0]) or (row_id, m[0]) in planted
        for m in mobiles.finditer(text):
            assert (row_id, m[0]) in listed or (row_id, "86" + m[0]) in listed
        for m in emails.finditer(text):
            assert (row_id, m[0]) in planted


# --------------------------------------------------------------------------- malformed lines


def test_malformed_lines_really_are_malformed(sample: Sample) -> None:
    problems: Counter[str] = Counter()
    for bad in sample.key["malformed"]:
        line = sample.lines[bad["line"] - 1]
        problems[bad["problem"]] += 1
        assert bad["bytes"] == len(line)
        if bad["problem"] == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                line.decode("utf-8")
            continue
        if bad["problem"] == "broken_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(line.decode("utf-8"))
            continue
        record = json.loads(line)
        if bad["problem"] == "missing_text":
            assert "text" not in record
        elif bad["problem"] == "text_number":
            assert isinstance(record["text"], int | float)
        elif bad["problem"] == "text_list":
            assert isinstance(record["text"], list)
        else:
            assert len(line) > 1_000_000 and isinstance(record["text"], str)
    assert set(problems) == MALFORMED and problems["oversized"] == 1


def test_every_other_line_is_a_well_formed_ticket(sample: Sample) -> None:
    bad = {e["line"] for e in sample.key["malformed"]}
    langs: Counter[str] = Counter()
    for number, line in enumerate(sample.lines, start=1):
        if number in bad:
            continue
        assert len(line) < 1_000_000
        record = json.loads(line.decode("utf-8"))
        assert set(record) == {"id", "text", "category", "lang", "created", "priority"}
        assert isinstance(record["text"], str) and record["text"]
        assert record["category"] in CATEGORY_KEYWORDS and record["lang"] in ("zh", "en")
        assert datetime.fromisoformat(record["created"]).tzinfo is not None
        langs[record["lang"]] += 1
    assert 0.4 < langs["zh"] / sum(langs.values()) < 0.6


# --------------------------------------------------------------------------- noise and keywords


def test_noise_rows_carry_their_noise(sample: Sample) -> None:
    noise = sample.key["noise"]

    def texts(name: str) -> list[str]:
        return [sample.tickets[e["id"]]["text"] for e in noise[name]]

    assert all(re.search(r"<(b|p|br/|div|a)\b[^>]*>", t) for t in texts("markup"))
    assert all(re.search(r"&(amp|lt|quot|#39|nbsp);", t) for t in texts("markup"))
    assert all(re.search(FULLWIDTH_ALNUM, t) for t in texts("fullwidth"))
    assert all(re.search(r"[\x00-\x08]", t) for t in texts("control"))
    assert all(re.search(r"[\u200b-\u200d\ufeff]", t) for t in texts("control"))
    assert all(len(t) <= 12 for t in texts("junk"))
    for text in texts("spam"):
        words = text.split()
        assert len(words) >= 80 and len(set(words)) <= 5
    clean = sample.planted_ids("exact_duplicates", "near_duplicates")
    clean |= {e["id"] for rows in noise.values() for e in rows}
    for ticket in sample.tickets.values():
        if ticket["id"] not in clean:
            assert not re.search(r"[<>&\x00-\x08\u200b-\u200d\ufeff]", ticket["text"])
            assert not re.search(FULLWIDTH_ALNUM, ticket["text"])


def test_every_plain_ticket_names_its_own_category_only(sample: Sample) -> None:
    noisy = sample.planted_ids("near_duplicates", "decoys", "pii")
    noisy |= {e["id"] for rows in sample.key["noise"].values() for e in rows}
    checked: Counter[str] = Counter()
    for ticket in sample.tickets.values():
        if ticket["id"] in noisy:
            continue
        text, lang = ticket["text"].lower(), ticket["lang"]
        own = CATEGORY_KEYWORDS[ticket["category"]][lang]
        others = [
            word
            for category, words in CATEGORY_KEYWORDS.items()
            if category != ticket["category"]
            for word in words[lang]
        ]
        assert not own or any(word in text for word in own), ticket
        assert not any(word in text for word in others), ticket
        checked[ticket["category"]] += 1
    assert set(checked) == set(CATEGORY_KEYWORDS)


# --------------------------------------------------------------------------- conversations


def test_conversation_defects_are_where_the_key_says(sample: Sample) -> None:
    found: Counter[str] = Counter()
    for issue in sample.key["conversation_issues"]:
        messages = sample.conversations[issue["id"]]["messages"]
        turn = messages[issue["message"]]
        found[issue["problem"]] += 1
        if issue["problem"] == "empty_turn":
            assert turn["content"].strip() == ""
        elif issue["problem"] == "missing_content":
            assert "content" not in turn
        elif issue["problem"] == "role_alternation":
            assert turn["role"] == messages[issue["message"] - 1]["role"] == "user"
        else:
            assert sum(m["role"] != "system" for m in messages) == 40
    assert set(found) == {"empty_turn", "missing_content", "role_alternation", "long"}
    assert found["long"] == 1


def test_other_conversations_alternate_cleanly(sample: Sample) -> None:
    defective = {e["id"] for e in sample.key["conversation_issues"]}
    # A near duplicate's typo may fall on a keyword.
    edited = {e["id"] for e in sample.key["near_duplicates"]}
    langs: Counter[str] = Counter()
    for conv in sample.conversations.values():
        if conv["id"] in defective:
            continue
        turns = [m for m in conv["messages"] if m["role"] != "system"]
        assert 2 <= len(turns) <= 8
        assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert all(m["content"].strip() for m in conv["messages"])
        own = CATEGORY_KEYWORDS[conv["category"]]
        langs["zh" if re.search(r"[\u4e00-\u9fff]", turns[0]["content"]) else "en"] += 1
        if own["en"] and conv["id"] not in edited:
            text = conversation_text(conv["messages"]).lower()
            assert any(word in text for word in own["en"] + own["zh"])
    assert 0.4 < langs["zh"] / sum(langs.values()) < 0.6


# --------------------------------------------------------------------------- sensors


def test_sensor_csv_has_the_documented_gaps_spikes_and_bad_cells(sample: Sample) -> None:
    with (sample.out / "sensors.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    sensors = sample.key["sensors"]
    assert len(rows) == sensors["rows"] == SENSOR_ROWS
    assert list(rows[0]) == ["timestamp", "temperature", "pressure"]
    missing = {(m["row"], m["column"]) for m in sensors["missing"]}
    bad = {(u["row"], u["column"]): u["value"] for u in sensors["unparseable"]}
    spikes = {(o["row"], o["column"]): o["value"] for o in sensors["outliers"]}
    assert len(missing) >= 4 and len(spikes) >= 3
    assert {column for _, column in bad} >= {"timestamp"} and len(bad) == 2
    for i, row in enumerate(rows):
        for column, cell in row.items():
            where = (i, column)
            if where in missing:
                assert cell == ""
            elif where in bad:
                assert cell == bad[where]
                parse = datetime.fromisoformat if column == "timestamp" else float
                with pytest.raises(ValueError):
                    parse(cell)
            else:
                assert cell != ""
                (datetime.fromisoformat if column == "timestamp" else float)(cell)
            if where in spikes:
                assert cell == spikes[where]
    for column in ("temperature", "pressure"):
        values = [
            float(r[column]) for i, r in enumerate(rows) if r[column] and (i, column) not in bad
        ]
        median = statistics.median(values)
        q1, _, q3 = statistics.quantiles(values, n=4)
        fence = 3 * (q3 - q1)
        flagged = {i for i, r in enumerate(rows) if _far(r[column], median, fence)}
        assert flagged == {row for row, col in spikes if col == column}


def _far(cell: str, median: float, fence: float) -> bool:
    try:
        return abs(float(cell) - median) > fence
    except ValueError:
        return False


# --------------------------------------------------------------------------- API edges


def test_iter_tickets_yields_the_json_lines_of_the_file(tmp_path: Path) -> None:
    generate(tmp_path, rows=300, seed=5)
    lines = (tmp_path / "tickets.jsonl").read_bytes().splitlines()
    decoded = []
    for line in lines:
        try:
            decoded.append(json.loads(line.decode("utf-8")))
        except ValueError:
            continue
    assert list(iter_tickets(rows=300, seed=5)) == decoded


def test_the_smallest_sample_still_plants_everything(tmp_path: Path) -> None:
    load_small = load(tmp_path, generate(tmp_path, rows=MIN_ROWS, seed=3))
    key = load_small.key
    assert {e["problem"] for e in key["malformed"]} == MALFORMED
    assert {(p["type"], p["format"]) for p in key["pii"]} == PII_FORMATS
    assert {d["type"] for d in key["decoys"]} == {"cn_id", "bank_card"}
    assert all(key["noise"][name] for name in key["noise"])
    assert {e["variant"] for e in key["exact_duplicates"]} == {"identical", "case", "whitespace"}
    assert key["near_duplicates"]
    problems = {e["problem"] for e in key["conversation_issues"]}
    assert problems == {"empty_turn", "missing_content", "role_alternation", "long"}


def test_rewrites_its_own_files_and_leaves_others(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "tickets.jsonl").write_text("stale\n")
    generate(tmp_path, rows=MIN_ROWS)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*FILES, "notes.txt"])
    assert not (tmp_path / "tickets.jsonl").read_bytes().startswith(b"stale")


def test_refuses_too_few_rows_and_a_file_for_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too few") as exc:
        generate(tmp_path / "a", rows=MIN_ROWS - 1)
    assert str(MIN_ROWS) in (exc.value.fix or "")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        generate(tmp_path / "file")
    assert not (tmp_path / "a").exists()
