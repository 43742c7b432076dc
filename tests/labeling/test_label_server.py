"""A real Label Studio server on a host with a route out, where every packet leaving is counted.

The server and every ``offline label`` command run inside a network namespace whose default
route leads to a fake internet (``tests.fixtures.netns``), and whose resolver lives there too;
an nft counter on the namespace's output counts every packet that leaves other than on loopback.
Label Studio phoning home (Sentry, analytics, version check, a DNS lookup) would show in it.
One server per module: its cold start takes about half a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.fixtures.netns import INET_V4, FakeInternet, fake_internet

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORT = 18_731
AUDIT = """
table inet audit {
    counter egress {}
    chain out {
        type filter hook output priority 0; policy accept;
        oifname "lo" accept
        # The kernel's own neighbour discovery and multicast reports on the new link.
        meta l4proto ipv6-icmp accept
        counter name "egress"
    }
}
"""


@dataclass
class Site:
    net: FakeInternet
    ws: Path
    baseline: int = 0

    def offline(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.net.host.run([str(BIN / "offline"), *args, "-w", str(self.ws)], timeout=timeout)

    def python(self, code: str) -> Any:
        proc = self.net.host.run([sys.executable, "-c", code, str(self.ws)], timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def egress(self) -> int:
        proc = self.net.host.run(["nft", "-j", "list", "counter", "inet", "audit", "egress"])
        items = json.loads(proc.stdout)["nftables"]
        return int(next(i["counter"]["packets"] for i in items if "counter" in i))


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def add_instruction_pairs(ws: Path) -> None:
    """An instruction/response dataset beside the sample, for the SFT review template."""
    import yaml

    pairs = [
        {"prompt": f"How do I {verb} my {thing}?", "answer": f"Open {place}, then choose {verb}."}
        for verb, thing, place in (
            ("reset", "password", "account settings"),
            ("track", "parcel", "the orders page"),
            ("cancel", "subscription", "billing"),
            ("download", "invoice", "the invoices tab"),
        )
    ]
    (ws / "data/raw/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["datasets"]["pairs"] = {
        "path": "data/raw/pairs.jsonl",
        "kind": "instruction",
        "columns": {"instruction": "prompt", "response": "answer"},
    }
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    subprocess.run(["bash", str(ROOT / "scripts/install-labelstudio-venv.sh")], check=True)
    base = tmp_path_factory.mktemp("label")
    ws = base / "ws"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for args in (
        ["init", str(ws)],
        ["data", "sample", "--out", str(ws / "data/raw"), "--rows", "200"],
    ):
        subprocess.run([str(BIN / "offline"), *args], check=True, env=env, capture_output=True)
    add_instruction_pairs(ws)
    subprocess.run(
        [str(BIN / "offline"), "data", "clean", "-w", str(ws)],
        check=True,
        env=env,
        capture_output=True,
    )
    with fake_internet("dsl") as net:
        rules = base / "audit.nft"
        rules.write_text(AUDIT)
        ok(net.host.run(["nft", "-f", str(rules)]))
        net.host.etc("resolv.conf", f"nameserver {INET_V4}\n")
        site = Site(net, ws)
        try:  # a start that fails or times out half way may have left the server running
            ok(
                site.offline(
                    "label", "server", "start", "--port", str(PORT), "--timeout", "400", timeout=420
                )
            )
            yield site
        finally:
            site.offline("label", "server", "stop")


def sdk(code: str) -> str:
    """A script that talks to the workspace's server with the SDK and prints JSON."""
    return (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from offline.labeling.project import client\n"
        "ls = client(Path(sys.argv[1]))\n" + code
    )


def test_status_secret_and_a_page_with_telemetry_off(site: Site) -> None:
    status = json.loads(ok(site.offline("label", "server", "status", "--json")))
    assert status["running"] and status["url"] == f"http://127.0.0.1:{PORT}"
    secret = site.ws / ".labelstudio/secret.json"
    assert secret.stat().st_mode & 0o777 == 0o600
    # Log in through the form as a browser does and read the app page's settings.
    script = (
        "import json, sys, httpx\n"
        "s = json.load(open(sys.argv[1] + '/.labelstudio/secret.json'))\n"
        f"base = 'http://127.0.0.1:{PORT}'\n"
        "c = httpx.Client(base_url=base, follow_redirects=True)\n"
        "c.get('/user/login/')\n"
        "form = {'email': s['username'], 'password': s['password'],\n"
        "        'csrfmiddlewaretoken': c.cookies.get('csrftoken')}\n"
        "c.post('/user/login/', data=form, headers={'Referer': base + '/user/login/'})\n"
        "page = c.get('/projects/')\n"
        "print(json.dumps({'url': str(page.url), 'html': page.text}))\n"
    )
    page = site.python(script)
    assert page["url"].endswith("/projects/"), "the admin login failed"
    html = page["html"]
    assert "sentry_dsn: null" in html and "collect_analytics: false" in html
    assert '"latest_version_from_pypi": null' in html
    assert 'src="http' not in html


def test_a_lan_bind_needs_a_password_file(site: Site) -> None:
    proc = site.offline("label", "server", "start", "--host", "0.0.0.0", "--port", str(PORT + 1))
    assert proc.returncode == 3 and "password file" in proc.stderr


def test_a_wrong_token_is_a_clear_error(site: Site) -> None:
    path = site.ws / ".labelstudio/secret.json"
    saved = path.read_text()
    secret = json.loads(saved)
    path.write_text(json.dumps({**secret, "token": "0" * 40}))
    try:
        proc = site.offline("label", "push", "--template", "classification", "--dataset", "tickets")
    finally:
        path.write_text(saved)
    assert proc.returncode == 3, proc.stderr
    assert "refused the API token" in proc.stderr and "Traceback" not in proc.stderr


def test_a_template_that_does_not_fit_the_data_creates_nothing(site: Site) -> None:
    proc = site.offline("label", "push", "--template", "ner", "--dataset", "conversations")
    assert proc.returncode == 3, proc.stderr
    assert "ner" in proc.stderr
    titles = site.python(sdk("print(json.dumps([p.title for p in ls.projects.list()]))"))
    assert "ner" not in titles


@pytest.mark.parametrize(
    ("template", "dataset"),
    [("ner", "tickets"), ("sft_review", "pairs"), ("conversation_review", "conversations")],
)
def test_every_template_makes_a_project_the_server_accepts(
    site: Site, template: str, dataset: str
) -> None:
    done = json.loads(
        ok(site.offline("label", "push", "--template", template, "--dataset", dataset, "--json"))
    )
    assert done["imported"] == done["rows"] > 0
    script = sdk(f"print(json.dumps(ls.projects.get(id={done['project_id']}).label_config))")
    assert site.python(script).strip() == (ROOT / f"labeling/{template}.xml").read_text().strip()


def test_a_push_interrupted_half_way_completes_without_duplicates(site: Site) -> None:
    # The first half of the tasks arrives as an interrupted push would have left them.
    script = sdk(
        "import pyarrow.parquet as pq\n"
        "from offline.labeling import templates\n"
        "t = templates.load_template('classification')\n"
        "rows = pq.read_table(Path(sys.argv[1]) / 'data/clean/tickets-00000.parquet').to_pylist()\n"
        "p = ls.projects.create(title='half-way', label_config=t.label_config)\n"
        "half = [{'data': templates.task_data(t, r)} for r in rows[: len(rows) // 2]]\n"
        "ls.projects.import_tasks(id=p.id, request=half)\n"
        "print(json.dumps(len(half)))\n"
    )
    half = site.python(script)
    done = json.loads(
        ok(
            site.offline(
                "label",
                "push",
                "--template",
                "classification",
                "--dataset",
                "tickets",
                "--project",
                "half-way",
                "--json",
            )
        )
    )
    assert done["already"] == half and done["imported"] == done["rows"] - half
    count = sdk(
        f"tasks = list(ls.tasks.list(project={done['project_id']}, fields='all', page_size=1000))\n"
        "ids = [t.data['record_id'] for t in tasks]\n"
        "print(json.dumps([len(ids), len(set(ids))]))\n"
    )
    assert site.python(count) == [done["rows"], done["rows"]]


def test_push_twice_adds_nothing_and_pull_writes_annotations_and_agreement(site: Site) -> None:
    first = json.loads(
        ok(
            site.offline(
                "label",
                "push",
                "--template",
                "classification",
                "--dataset",
                "tickets",
                "--rules",
                "--json",
            )
        )
    )
    assert first["imported"] > 100 and first["already"] == 0 and first["predictions"] > 0
    again = json.loads(
        ok(
            site.offline(
                "label", "push", "--template", "classification", "--dataset", "tickets", "--json"
            )
        )
    )
    assert again["imported"] == 0 and again["already"] == first["rows"]
    pid = first["project_id"]
    # Two annotators label the first ten tasks; they disagree on two.
    script = sdk(
        f"tasks = list(ls.tasks.list(project={pid}, fields='all', page_size=1000))[:10]\n"
        "second = ls.users.create(email='ann2@example.com', username='ann2@example.com')\n"
        "for i, t in enumerate(tasks):\n"
        "    other = 'billing' if i >= 2 else 'refund'\n"
        "    for who, label in ((None, 'billing'), (second.id, other)):\n"
        "        result = [{'from_name': 'category', 'to_name': 'text', 'type': 'choices',\n"
        "                   'value': {'choices': [label]}}]\n"
        "        extra = {'completed_by': who} if who else {}\n"
        "        ls.annotations.create(id=t.id, result=result, lead_time=2.5, **extra)\n"
        "print(json.dumps([t.data['record_id'] for t in tasks]))\n"
    )
    record_ids = site.python(script)
    out = json.loads(ok(site.offline("label", "pull", "--json")))
    table = pq.read_table(site.ws / "data/labeled/classification.parquet").to_pylist()
    assert len(table) == 20 and {r["record_id"] for r in table} == set(record_ids)
    assert {r["annotator"] for r in table} == {"admin@deepseek-offline.local", "ann2@example.com"}
    assert all(r["lead_time"] == 2.5 and r["label"] in ("billing", "refund") for r in table)
    metrics = json.loads((site.ws / "metrics/label.json").read_text())
    assert metrics == out
    assert metrics["classification"]["annotated_tasks"] == 10
    assert metrics["classification"]["agreement"]["tasks_with_2plus"] == 10


def test_accept_predictions_labels_the_rest_in_bulk_and_leaves_people_s_labels(
    site: Site,
) -> None:
    # After the previous test: the tickets are pushed with rule predictions, ten are labelled
    # by two people. One more task gets a second prediction (the one-request-per-task path).
    reg = json.loads((site.ws / ".labelstudio/projects.json").read_text())
    pid = reg["classification"]["id"]
    listing = (
        f"tasks = list(ls.tasks.list(project={pid}, fields='all', page_size=1000))\n"
        "def plain(x): return x if isinstance(x, dict) else x.dict()\n"
    )
    script = sdk(
        listing + "spare = next(t for t in tasks if t.predictions and not t.annotations)\n"
        "result = [{'from_name': 'category', 'to_name': 'text', 'type': 'choices',\n"
        "           'value': {'choices': ['refund']}}]\n"
        "ls.predictions.create(task=spare.id, result=result, model_version='second')\n"
        "print(json.dumps(spare.id))\n"
    )
    spare = site.python(script)
    before = sdk(
        listing + "print(json.dumps({t.id: [len(t.predictions or []), sorted(plain(a)['id']\n"
        "    for a in t.annotations or [])] for t in tasks}))\n"
    )
    tasks = {int(k): v for k, v in site.python(before).items()}
    people = {tid: anns for tid, (_, anns) in tasks.items() if anns}
    waiting = {tid for tid, (preds, anns) in tasks.items() if preds and not anns}
    assert len(people) == 10 and spare in waiting and len(waiting) > 50
    out = json.loads(ok(site.offline("label", "accept-predictions", "--json")))
    assert out["classification"] == len(waiting)
    after = sdk(
        listing + "print(json.dumps({t.id: [[plain(a)['id'], plain(a)['result'], plain(a).get(\n"
        "    'parent_prediction')] for a in t.annotations or []] + [[None,\n"
        "    plain(p)['result'], plain(p)['id']] for p in (t.predictions or [])[:1]]\n"
        "    for t in tasks}))\n"
    )
    now = {int(k): v for k, v in site.python(after).items()}
    for tid, (_, anns) in tasks.items():
        annotations = [a for a in now[tid] if a[0] is not None]
        if tid in people:  # a person's labels stay exactly as they were
            assert sorted(a[0] for a in annotations) == anns
            assert all(a[2] is None for a in annotations)
        elif tid in waiting:  # one annotation: the first prediction's result, linked to it
            first = now[tid][-1]
            assert len(annotations) == 1 and annotations[0][1] == first[1]
            assert annotations[0][2] == first[2]
        else:
            assert annotations == []
    # accepting again changes nothing
    again = json.loads(ok(site.offline("label", "accept-predictions", "--json")))
    assert again["classification"] == 0
    pulled = json.loads(ok(site.offline("label", "pull", "--json")))["classification"]
    assert pulled["annotated_tasks"] == 10 + len(waiting)
    assert pulled["from_predictions_only"] == len(waiting)
    table = pq.read_table(site.ws / "data/labeled/classification.parquet").to_pylist()
    assert sum(r["from_prediction"] for r in table) == len(waiting)


def test_review_samples_give_each_cleaning_step_its_precision(site: Site) -> None:
    first = json.loads(ok(site.offline("label", "sample", "--per-step", "3", "--json")))
    again = json.loads(ok(site.offline("label", "sample", "--per-step", "3", "--json")))
    assert first["imported"] == first["rows"] > 0
    assert again["imported"] == 0 and again["already"] == first["rows"]
    ledger = pq.read_table(site.ws / "data/rejected").column("step").to_pylist()
    # Reviewers agree with every decision but one: the first kept row should have gone.
    pid = first["project_id"]
    script = sdk(
        f"tasks = list(ls.tasks.list(project={pid}, fields='all', page_size=1000))\n"
        "wrong = next(t.id for t in tasks if t.data['step'] == 'kept')\n"
        "for t in tasks:\n"
        "    verdict = 'wrong' if t.id == wrong else 'correct'\n"
        "    result = [{'from_name': 'verdict', 'to_name': 'text', 'type': 'choices',\n"
        "               'value': {'choices': [verdict]}}]\n"
        "    ls.annotations.create(id=t.id, result=result, lead_time=1.0)\n"
        "print(json.dumps(sorted({t.data['step'] for t in tasks})))\n"
    )
    steps = site.python(script)
    assert set(steps) == set(ledger) | {"kept"}
    precision = json.loads(ok(site.offline("label", "pull", "--json")))["cleaning_precision"]
    assert set(precision) == set(steps)
    kept = precision.pop("kept")
    assert kept["reviewed"] == 9 and kept["correct"] == 8  # 3 per dataset: tickets, chats, pairs
    assert all(p["precision"] == 1.0 for p in precision.values())


def test_nothing_left_the_host(site: Site) -> None:
    # Runs last in this module: the server has started, served pages and the API.
    assert site.egress() == site.baseline
