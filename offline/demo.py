"""``make demo``'s isolated phase: install a bundle, check the host, run the whole pipeline and
serve the result, inside a network namespace whose every attempt to leave is counted.

The namespace (:class:`AirGap`) has loopback and one interface to nowhere that holds the default
routes and a resolver address, so that anything that tries to reach out (a DNS lookup, a
telemetry ping, a download) sends a real packet instead of failing before it. An nft chain on
output, ahead of everything else, counts each packet that is not on loopback, records its
destination and rejects it. The demo fails when that count is not 0. ``deepseek-doctor``'s
network group probes the internet on purpose to prove it unreachable: its packets are counted
apart (it runs alone, and the counter is read before and after it).

Before anything else the demo installs the Debian packages it needs
(``scripts/packages/demo.txt``, through ``scripts/install-debian-packages.sh``, the installer the
tests use too). Without root (no namespace), the phase runs in place, says loudly that the
air-gap proof was skipped, and reports the doctor's network group as not applicable; as root, a
tool the namespace needs that is missing and could not be installed stops the demo before the
isolated phase starts, naming the package.

    python -m offline.demo --bundle dist/bundle --pubkey keys/bundle-signing.pub.pem \\
        --prefix dist/demo-host
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.airgap import offline_env
from offline.audit.site import SITE_KEY_VAR
from offline.data.layout import LAYOUT

NETNS = "deepseek-demo"
TINY = "tiny"  # the embedded default model, built on the isolated host
RESOLVER = "198.18.0.53"  # benchmark-testing range: never a real resolver
RULES = """\
table inet airgap {
    set dst4 { type ipv4_addr . inet_service; flags dynamic; size 4096; }
    set dst6 { type ipv6_addr . inet_service; flags dynamic; size 4096; }
    set other4 { type ipv4_addr; flags dynamic; size 4096; }
    set other6 { type ipv6_addr; flags dynamic; size 4096; }
    counter egress { }
    chain output {
        type filter hook output priority -300; policy accept;
        oifname "lo" accept
        # the kernel's own link-local IPv6 housekeeping (MLD reports, router and neighbour
        # solicitations): it cannot leave the link and no program sent it
        ip6 daddr ff02::/16 icmpv6 type {
            mld-listener-report, mld2-listener-report, nd-router-solicit, nd-neighbor-solicit
        } accept
        counter name egress
        meta nfproto ipv4 meta l4proto { tcp, udp } add @dst4 { ip daddr . th dport }
        meta nfproto ipv6 meta l4proto { tcp, udp } add @dst6 { ip6 daddr . th dport }
        meta nfproto ipv4 meta l4proto != { tcp, udp } add @other4 { ip daddr }
        meta nfproto ipv6 meta l4proto != { tcp, udp } add @other6 { ip6 daddr }
        meta l4proto tcp reject with tcp reset
        reject
    }
}
"""


@dataclass(frozen=True)
class Requirement:
    """One line of a ``scripts/packages/*.txt`` list."""

    package: str
    command: str  # looked for on PATH; "-" when the package has none
    when: str  # "always", or "airgap": only the namespace and its counter need it


def requirements(repo: Path, purpose: str = "demo") -> list[Requirement]:
    """The Debian packages ``purpose`` needs, from the list the installer reads."""
    found = []
    for line in (repo / f"scripts/packages/{purpose}.txt").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            package, command, when = fields[:3]
            found.append(Requirement(package, command, when))
    return found


def prerequisites(repo: Path, purpose: str = "demo") -> list[Requirement]:
    """Install what ``purpose`` needs (idempotent); return what is still missing after it."""
    installer = repo / "scripts/install-debian-packages.sh"
    subprocess.run(["bash", str(installer), purpose], stdin=subprocess.DEVNULL, check=False)
    return [
        r for r in requirements(repo, purpose) if r.command != "-" and not shutil.which(r.command)
    ]


def check_prerequisites(missing: Sequence[Requirement], root: bool) -> bool:
    """Whether the isolated phase can run in a namespace; exits naming what is missing when
    the demo cannot run at all (a tool the pipeline needs, or, as root, one the namespace needs).
    """
    fatal = [r for r in missing if r.when == "always" or root]
    if fatal:
        names = ", ".join(f"{r.command} (Debian package {r.package})" for r in fatal)
        packages = " ".join(r.package for r in fatal)
        sudo = "" if root else "sudo "
        raise SystemExit(
            f"demo: cannot start the isolated phase: {names} missing, and installing it failed"
            f" (see above)\n  fix: {sudo}apt-get install {packages}, then run make demo again"
        )
    return root and not missing


def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), text=True, capture_output=True, check=True, **kwargs)


class AirGap:
    """A network namespace with no way out, where every attempt to get out is counted."""

    def __init__(self, name: str = NETNS) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name

    @staticmethod
    def possible() -> bool:
        return os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "nft"))

    def __enter__(self) -> AirGap:
        self.close()  # a namespace left by a killed run
        ip = ["ip", "-n", self.name]
        _run(["ip", "netns", "add", self.name])
        _run([*ip, "link", "set", "lo", "up"])
        # both ends of a veth pair inside the namespace: an interface to route to, which
        # leads nowhere (a dummy device would do, but containers often lack its module)
        _run([*ip, "link", "add", "out0", "type", "veth", "peer", "name", "out1"])
        _run([*ip, "link", "set", "out1", "up"])
        _run([*ip, "addr", "add", "198.18.0.2/24", "dev", "out0"])
        _run([*ip, "-6", "addr", "add", "2001:db8::2/64", "dev", "out0", "nodad"])
        _run([*ip, "link", "set", "out0", "up"])
        _run([*ip, "route", "add", "default", "dev", "out0"])
        _run([*ip, "-6", "route", "add", "default", "dev", "out0"])
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(f"nameserver {RESOLVER}\n")
        _run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], input=RULES)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def packets(self) -> int:
        out = _run(self.wrap(["nft", "-j", "list", "counter", "inet", "airgap", "egress"]))
        items = json.loads(out.stdout)["nftables"]
        return int(next(i["counter"]["packets"] for i in items if "counter" in i))

    def forget(self) -> None:
        """Empty the destination sets (the counter keeps counting)."""
        for name in ("dst4", "dst6", "other4", "other6"):
            _run(self.wrap(["nft", "flush", "set", "inet", "airgap", name]))

    def destinations(self) -> list[str]:
        found = []
        for name in ("dst4", "dst6", "other4", "other6"):
            out = _run(self.wrap(["nft", "-j", "list", "set", "inet", "airgap", name]))
            for item in json.loads(out.stdout)["nftables"]:
                for elem in item.get("set", {}).get("elem", []):
                    value = (
                        elem.get("elem", {}).get("val", elem) if isinstance(elem, dict) else elem
                    )
                    if isinstance(value, dict) and "concat" in value:
                        found.append(":".join(str(v) for v in value["concat"]))
                    else:
                        found.append(str(value))
        return found


@dataclass
class Stage:
    name: str
    seconds: float
    egress: int | None = None  # packets that tried to leave during the stage (None: not counted)
    destinations: list[str] = field(default_factory=list)


@dataclass
class Demo:
    bundle: Path
    pubkey: Path
    prefix: Path
    python: str
    rows: int
    port: int
    gap: AirGap | None
    model: str = TINY  # the SFT stage's base: the embedded tiny model or a bundled [[model]]
    stages: list[Stage] = field(default_factory=list)

    counted: int = 0  # every packet the namespace's counter saw, read at the end

    def egress(self) -> tuple[int, int]:
        """Packets that tried to leave: all but the doctor's probes, and the probes."""
        doctor = sum(s.egress or 0 for s in self.stages if s.name == DOCTOR)
        return self.counted - doctor, doctor

    @property
    def bin(self) -> Path:
        return self.prefix.resolve() / "envs/toolkit/bin"

    @property
    def ws(self) -> Path:
        return self.prefix.resolve() / "workspace"

    @property
    def site_key(self) -> Path:
        """The site's key, made on the host at install: it signs every chained log's
        checkpoints (doctor, training, serving) and the evidence dossier."""
        return self.prefix.resolve() / "etc/site-key.pem"

    def env(self) -> dict[str, str]:
        env = offline_env(PATH=f"{self.bin}:{os.environ.get('PATH', '')}")
        env[SITE_KEY_VAR] = str(self.site_key)
        return env

    def sh(
        self, name: str, argv: Sequence[str], cwd: Path | None = None, timeout: float = 1800
    ) -> str:
        """Run ``argv`` on the isolated side; a failure stops the demo with its output."""
        cmd = self.gap.wrap(argv) if self.gap else list(argv)
        proc = subprocess.run(
            cmd, cwd=cwd, env=self.env(), text=True, capture_output=True, timeout=timeout
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-6000:])
            raise SystemExit(f"demo: {name} failed (exit {proc.returncode}): {' '.join(argv)}")
        return proc.stdout

    def stage(self, name: str, steps: Sequence[Sequence[str]], cwd: Path | None = None) -> str:
        with self.timed(name):
            return "".join(self.sh(name, step, cwd) for step in steps)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time a stage and, in the namespace, count what tried to leave during it."""
        before = self.gap.packets() if self.gap else 0
        start = time.perf_counter()
        try:
            yield
        finally:
            stage = Stage(name, time.perf_counter() - start)
            if self.gap:
                stage.egress = self.gap.packets() - before
                stage.destinations = self.gap.destinations()
                self.gap.forget()
            self.stages.append(stage)
            counted = "" if stage.egress is None else f", {stage.egress} packets tried to leave"
            print(f"demo: {name} done in {stage.seconds:.1f} s{counted}", flush=True)


CLIENT = r"""
import json, sys, time
import httpx
cls_url, lm_url, key = sys.argv[1], sys.argv[2], sys.argv[3]
auth = {"Authorization": f"Bearer {key}"}
deadline = time.monotonic() + 300
for url in (cls_url, lm_url):
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{url} not ready")
        time.sleep(0.5)
texts = ["My Pro annual plan renewed and I was charged twice without any notice.",
         "The parcel was promised for Monday and it is still in transit."]
t = time.perf_counter()
p = httpx.post(f"{cls_url}/predict", json={"texts": texts}, headers=auth, timeout=60)
predict_ms = (time.perf_counter() - t) * 1000
p.raise_for_status()
chat = {"model": "trained-int8", "max_tokens": 24, "temperature": 0,
        "messages": [{"role": "user", "content": "My parcel has not arrived yet."}]}
t = time.perf_counter()
c = httpx.post(f"{lm_url}/v1/chat/completions", json=chat, headers=auth, timeout=120)
chat_ms = (time.perf_counter() - t) * 1000
c.raise_for_status()
served = httpx.get(f"{lm_url}/v1/models", headers=auth, timeout=60).json()["data"][0]
chat["messages"] += [c.json()["choices"][0]["message"],
                     {"role": "user", "content": "It was due on Monday. " * 20 + "Please check."}]
t = time.perf_counter()
again = httpx.post(f"{lm_url}/v1/chat/completions", json=chat, headers=auth, timeout=120)
again.raise_for_status()
second_ms = (time.perf_counter() - t) * 1000
denied = httpx.post(f"{cls_url}/predict", json={"texts": texts}, timeout=60).status_code
print(json.dumps({
    "predict": [[x, y["label"], max(y["scores"].values())]
                for x, y in zip(texts, p.json()["predictions"])],
    "predict_ms": round(predict_ms, 1),
    "chat": c.json()["choices"][0]["message"]["content"],
    "chat_usage": c.json()["usage"],
    "chat_ms": round(chat_ms, 1),
    "lm_backend": served["backend"],
    "lm_max_model_len": served["max_model_len"],
    "second_turn_usage": again.json()["usage"],
    "second_turn_ms": round(second_ms, 1),
    "without_key": denied,
}))
"""


def _card(directory: Path) -> dict[str, Any]:
    """An export's card, read as serve reads it; empty when the stage did not run."""
    from offline.deploy import artifact
    from offline.errors import OfflineError

    try:
        return artifact.read_card(directory)
    except OfflineError:
        return {}


def _json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


# SFT on a pretrained base: LoRA adapters (merged into the weights at export) at a rate that
# keeps what the model knows, and a run short enough for 2 CPUs.
PRETRAINED_SFT: dict[str, Any] = {
    "lora": {"enabled": True},
    "learning_rate": 0.001,
    "max_steps": 30,
    "warmup_steps": 3,
    "micro_batch_size": 4,
    "eval_every": 15,
    "eval_batches": 6,
    "checkpoint": {"full_every": 30, "light_every": 15},
}

# torch.ao's dynamic int8 Linear (TorchScript int8) quantizes activations per tensor, which a
# real LM's activation outliers do not survive (SmolLM2: top-1 agreement 25 %, refused by the
# gate); torchao's (pt2) and TVM's int8 pass. The trained model's fp32 exports are left out for
# time: evaluate compares the int8 exports with the fp32 model itself.
PRETRAINED_INT8 = (
    "offline export --model models/trained --format pt2 --format tvm --quantize int8"
    " --sample data/split/conversations/test.parquet --out models/export/trained-int8"
)


def use_base_model(ws: Path, model: Path) -> None:
    """Point the workspace's SFT stage (train.yaml and its dvc.yaml dependency) at ``model``,
    a directory the bundle installed, instead of the embedded ``models/tiny``; the trained
    model is exported int8 as pt2 and TVM (and for aarch64)."""
    import yaml

    if not (model / "config.json").is_file():
        raise SystemExit(
            f"demo: no model at {model}: the bundle does not carry it"
            "\n  fix: make demo MODEL=smollm2 (its bundle carries SmolLM2-135M-Instruct)"
        )
    where = os.path.relpath(model, ws)
    train = yaml.safe_load((ws / "train.yaml").read_text())
    train["model"] = where
    for key, value in PRETRAINED_SFT.items():
        train[key] = {**train.get(key, {}), **value} if isinstance(value, dict) else value
    (ws / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False))
    pipeline = yaml.safe_load((ws / "dvc.yaml").read_text())
    stage = pipeline["stages"]["train"]
    stage["deps"] = [where if dep == LAYOUT.tiny else dep for dep in stage["deps"]]
    export = pipeline["stages"]["export"]
    export["cmd"] = [PRETRAINED_INT8 if c.endswith("/trained-int8") else c for c in export["cmd"]]
    export["cmd"] = [c for c in export["cmd"] if not c.endswith("/trained-none")]
    (ws / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def run(demo: Demo, repo: Path) -> dict[str, Any]:
    """Every stage of the isolated phase, in order; the figures for the summary."""
    bundle, ws = demo.bundle.resolve(), demo.ws
    demo.stage(
        "install",
        [
            ["bash", str(repo / "scripts/install-offline.sh"), str(bundle), "--pubkey",
             str(demo.pubkey.resolve()), "--prefix", str(demo.prefix.resolve()), "--python",
             demo.python, "--no-doctor"],
            [str(demo.bin / "offline"), "bundle", "verify", str(demo.prefix.resolve() / "bundle"),
             "--pubkey", str(demo.prefix.resolve() / "etc/trusted.pub.pem")],
            [str(demo.bin / "offline"), "bundle", "keygen", "--out", str(demo.site_key)],
        ],
        cwd=repo,
    )  # fmt: skip
    figures: dict[str, Any] = {"doctor": _doctor(demo)}
    offline = str(demo.bin / "offline")
    sample = [offline, "data", "sample", "--out", LAYOUT.raw]
    if demo.rows:
        sample += ["--rows", str(demo.rows)]
    demo.stage("init", [[offline, "init", str(ws)]])
    if demo.model != TINY:
        use_base_model(ws, demo.prefix.resolve() / "models" / demo.model)
    demo.stage("sample", [sample], cwd=ws)
    demo.stage("validate+clean", [["dvc", "repro", "clean"]], cwd=ws)
    lsport = str(demo.port + 2)
    # the server stays up for the whole pipeline: the label stage pulls on every `dvc repro`
    # and the split reads what it pulls
    try:
        demo.stage(
            "label",
            [
                [offline, "label", "server", "start", "--port", lsport, "--timeout", "600"],
                [offline, "label", "push", "--template", "classification", "--dataset",
                 "tickets", "--rules"],
                [offline, "label", "accept-predictions"],
                ["dvc", "repro", "label"],
            ],
            cwd=ws,
        )  # fmt: skip
        for name, stages in (
            ("split", ["split", "init_model"]),
            ("train (SFT)", ["train"]),
            ("train (classifier)", ["train_classifier"]),
            ("export", ["export"]),
            ("evaluate", ["evaluate"]),
        ):
            demo.stage(name, [["dvc", "repro", *stages]], cwd=ws)
        demo.stage("dvc push", [["dvc", "push"]], cwd=ws)
    finally:
        demo.sh("label server stop", [offline, "label", "server", "stop"], cwd=ws)
    figures["serve"] = _serve(demo)
    figures["evidence"] = _evidence(demo)
    return figures


def _evidence(demo: Demo) -> dict[str, Any]:
    """The pipeline's last stage once more, now that the servers' audit logs exist: the signed
    dossier, then checked three ways, as an auditor would (the toolkit, sha256sum, openssl)."""
    ws = demo.ws
    with demo.timed("evidence"):
        demo.sh("evidence", ["dvc", "repro", "--single-item", "evidence"], cwd=ws)
        checked = demo.sh(
            "evidence", [str(demo.bin / "offline"), "evidence", "verify", LAYOUT.evidence], cwd=ws
        )
        dossier = ws / LAYOUT.evidence
        demo.sh("evidence", ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=dossier)
        sums = f"{LAYOUT.evidence}/ARTIFACTS.sha256"
        demo.sh("evidence", ["sha256sum", "--quiet", "-c", sums], cwd=ws)
        openssl = demo.sh(
            "evidence",
            ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "signing.pub.pem", "-rawin",
             "-in", "index.json", "-sigfile", "index.sig"],
            cwd=dossier,
        )  # fmt: skip
    index = _json(ws / LAYOUT.evidence / "index.json")
    items = _json(ws / LAYOUT.evidence / "mapping.json").get("items", [])
    return {
        "files": len(index.get("files", {})) + 3,
        "artifacts": len(index.get("artifacts", [])),
        "logs": len(index.get("logs", [])),
        "gaps": len(index.get("gaps", [])),
        "mapping": {s: sum(i["status"] == s for i in items) for s in {i["status"] for i in items}},
        "verify": checked.strip().splitlines()[0] if checked.strip() else "",
        "openssl": openssl.strip(),
    }


DOCTOR = "doctor (network)"


def _doctor(demo: Demo) -> dict[str, Any]:
    """The doctor's network group, alone: its deliberate probes are its stage's egress.

    Outside a namespace the host was never isolated, so the group proves nothing there: it is
    reported as not applicable instead of failing on the host's real network.
    """
    if demo.gap is None:
        demo.stages.append(Stage(DOCTOR, 0.0))
        return {"not applicable": "the demo ran in place, not isolated"}
    argv = [str(demo.bin / "deepseek-doctor"), "--bundle", str(demo.prefix.resolve() / "bundle"),
            "--only", "network", "--json"]  # fmt: skip
    cmd = demo.gap.wrap(argv) if demo.gap else argv
    with demo.timed(DOCTOR):
        proc = subprocess.run(cmd, env=demo.env(), text=True, capture_output=True, timeout=300)
    summary = json.loads(proc.stdout or "{}").get("summary", {})
    if summary.get("fail", 1) or summary.get("error", 0):
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-2000:])
        raise SystemExit("demo: deepseek-doctor's network group did not pass")
    print(f"demo: doctor (network) {summary}", flush=True)
    return dict(summary)


def _serve(demo: Demo) -> dict[str, Any]:
    """The classifier's int8 export served (TVM) and the SFT model with its KV cache and full
    context (eager, continuous batching); real requests from inside the namespace."""
    offline = str(demo.bin / "offline")
    keys = demo.ws / "serve-keys"
    keys.unlink(missing_ok=True)
    key = demo.sh("serve-key", [offline, "serve-key", "add", "--keys", str(keys), "--id", "demo"])
    with demo.timed("serve"):
        return _serve_and_ask(demo, keys, key.strip())


def _serve_and_ask(demo: Demo, keys: Path, key: str) -> dict[str, Any]:
    offline = str(demo.bin / "offline")
    servers = []
    cls_port, lm_port = demo.port, demo.port + 1
    for model, port in (("classifier-int8", cls_port), ("trained-int8", lm_port)):
        argv = [
            offline, "serve", "--model", str(demo.ws / LAYOUT.exports / model),
            "--port", str(port), "--api-keys", str(keys),
            "--audit-log", str(demo.ws / f"audit-{model}.jsonl"),
            "--audit-key", str(demo.site_key),
        ]  # fmt: skip
        cmd = demo.gap.wrap(argv) if demo.gap else argv
        with (demo.ws / f"serve-{model}.log").open("w") as log:  # the child keeps its own copy
            servers.append(
                subprocess.Popen(cmd, env=demo.env(), stdout=log, stderr=subprocess.STDOUT)
            )
    try:
        out = demo.sh(
            "serve",
            [str(demo.bin / "python"), "-c", CLIENT, f"http://127.0.0.1:{cls_port}",
             f"http://127.0.0.1:{lm_port}", key],
        )  # fmt: skip
    finally:
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    result: dict[str, Any] = json.loads(out)
    # Each server's hash-chained audit log, closed when it stopped: checked as an auditor would.
    logs = [demo.ws / f"audit-{model}.jsonl" for model in ("classifier-int8", "trained-int8")]
    result["audit"] = [
        _audit_line(
            subprocess.run(
                [offline, "audit", "verify", "--closed", str(log)],
                capture_output=True,
                text=True,
                env=demo.env(),
            )
        )
        for log in logs
    ]
    return result


def _audit_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else f"offline audit verify exited {proc.returncode}"


def _figures(ws: Path, figures: dict[str, Any]) -> dict[str, str]:
    """One line of key figures per stage, from the files the stages wrote."""
    lines: dict[str, str] = {}
    datasets = _json(ws / LAYOUT.metric("clean")).get("datasets", {})
    if datasets:
        kept = sum(d.get("rows_out", 0) for d in datasets.values())
        rejected = sum(d.get("rejected", 0) for d in datasets.values())
        pii = sum(
            sum(d.get("steps", {}).get("pii", {}).get("counts", {}).values())
            for d in datasets.values()
        )
        lines["validate+clean"] = (
            f"{len(datasets)} datasets: {kept} rows kept, {rejected} rejected with a reason"
            f" (data/rejected), {pii} PII spans found and masked"
        )
    label = _json(ws / LAYOUT.metric("label"))
    if label:
        tickets = label.get("classification", {})
        total, done = tickets.get("tasks", 0), tickets.get("annotated_tasks", 0)
        lines["label"] = (
            f"{done} of {total} tickets labelled in Label Studio: rule-based pre-annotations"
            " ACCEPTED AS LABELS, no person looked. For a person: review the"
            f" {tickets.get('from_predictions_only', 0)} accepted labels, label the"
            f" {total - done} tickets no rule matched"
        )
    split_metrics = _json(ws / LAYOUT.metric("split"))
    split = split_metrics.get("datasets", {})
    if split:
        studio = split_metrics.get("labelstudio_labels", {})
        lines["split"] = "train/validation/test: " + ", ".join(
            f"{name} {'/'.join(str(n) for n in sides.values())}" for name, sides in split.items()
        )
        if studio:
            lines["split"] += "; labels from Label Studio: " + ", ".join(
                f"{name} {n}" for name, n in studio.items()
            )
    for stage, name in (("train (SFT)", "train"), ("train (classifier)", "train_classifier")):
        m = _json(ws / LAYOUT.metric(name))
        if m:
            keys = ("steps", "loss_first", "loss", "eval_loss", "accuracy", "tokens_per_s")
            lines[stage] = ", ".join(
                f"{k} {m[k]:.4g}" for k in keys if isinstance(m.get(k), float | int)
            )
    export = []
    for model in ("classifier", "trained"):
        card = _card(ws / LAYOUT.exports / f"{model}-int8")
        for art in card.get("artifacts", []):
            if art["format"] != "tvm":
                continue
            par, lat = art["parity"], art["latency_ms"]
            if art.get("decoder"):  # the KV-cache decoder: judged on greedy generations
                decode = next(iter(lat.values()), None)
                export.append(
                    f"{model} TVM int8 decoder {art['bytes'] / 1e6:.2f} MB, decode p50 {decode}"
                    f" ms, generated top-1 {par.get('generated_top1_agreement', 0):.1%},"
                    f" gate {art['gate']}"
                )
            else:
                export.append(
                    f"{model} TVM int8 {art['bytes'] / 1e6:.2f} MB, b1 p50 {lat.get('b1_p50')} ms,"
                    f" top-1 {par.get('top1_agreement', 0):.1%}, gate {art['gate']}"
                )
    if export:
        lines["export"] = "; ".join(export)
    evaluated = []
    for model in ("classifier", "trained"):
        m = _json(ws / LAYOUT.metric(f"eval_{model}"))
        if not m:
            continue
        deployed, eager = m["backends"][m["deployed"]], m["backends"]["eager"]
        if m["task"] == "classification":
            found = (
                f"accuracy {deployed['accuracy']:.1%} (fp32 eager {eager['accuracy']:.1%}),"
                f" macro-F1 {deployed['macro_f1']:.3f}"
            )
        else:
            found = (
                f"perplexity {deployed['perplexity']:.4g} (fp32 eager {eager['perplexity']:.4g}),"
                f" next-token accuracy {deployed['token_accuracy']:.1%}"
            )
        evaluated.append(f"{model} int8 {m['deployed']} on {m['rows']} test rows: {found}")
    if evaluated:
        lines["evaluate"] = "; ".join(evaluated)
    doctor = figures.get("doctor", {})
    lines[DOCTOR] = ", ".join(
        f"{k}: {v}" if isinstance(v, str) else f"{k} {v}" for k, v in doctor.items()
    )
    serve = figures.get("serve", {})
    if serve:
        first = serve["predict"][0]
        lines["serve"] = (
            f"/predict {first[1]!r} ({first[2]:.0%}) in {serve['predict_ms']} ms;"
            f" chat {serve['chat']!r} in {serve['chat_ms']} ms"
            f" ({serve.get('lm_backend')} with a KV cache, {serve.get('lm_max_model_len')} tokens"
            f" of context; a second turn of"
            f" {serve.get('second_turn_usage', {}).get('prompt_tokens')} prompt tokens in"
            f" {serve.get('second_turn_ms')} ms);"
            f" without a key: {serve['without_key']}"
        )
        if serve.get("audit"):
            lines["serve"] += "; audit logs: " + "; ".join(serve["audit"])
    evidence = figures.get("evidence", {})
    if evidence:
        mapped = ", ".join(f"{n} {s}" for s, n in sorted(evidence["mapping"].items()))
        lines["evidence"] = (
            f"{LAYOUT.evidence}/: {evidence['files']} files, {evidence['artifacts']} artifacts by"
            f" sha256, {evidence['logs']} hash-chained logs, {evidence['gaps']} known gaps listed;"
            f" Annex IV / MLPS items: {mapped}; offline evidence verify: {evidence['verify']};"
            f" sha256sum -c OK; openssl: {evidence['openssl']}"
        )
    return lines


def summary(demo: Demo, figures: dict[str, Any], total: float) -> str:
    lines = _figures(demo.ws, figures)
    where = "in a network namespace with no way out" if demo.gap else "IN PLACE (no namespace)"
    out = [f"deepseek-offline demo: the isolated phase, {where}", ""]
    if demo.model != TINY:
        out[1:1] = [f"  SFT base model: {demo.model} (from the bundle), LoRA"]
    out.append(f"  {'stage':<20} {'seconds':>8} {'egress':>7}  figures")
    for stage in demo.stages:
        egress = "-" if stage.egress is None else str(stage.egress)
        out.append(
            f"  {stage.name:<20} {stage.seconds:>8.1f} {egress:>7}  {lines.get(stage.name, '')}"
        )
    out.append("")
    out.append(f"  total {total / 60:.1f} min (goal: 15 min on 2 CPUs after the first install)")
    exports = os.path.relpath(demo.ws / LAYOUT.exports)
    out.append(f"  artifacts: {exports} (edge packages: *-aarch64/*.tar)")
    if demo.gap is None:
        out.append(
            "  AIR-GAP PROOF SKIPPED: not root, so no network namespace; nothing was counted"
        )
        return "\n".join(out)
    leaked, probes = demo.egress()
    out.append(
        f"  air-gap: {leaked} packets tried to leave the isolated namespace"
        f" (besides deepseek-doctor's {probes} deliberate probes, all rejected)"
    )
    for stage in demo.stages:
        if stage.egress and stage.name != DOCTOR:
            shown = ", ".join(stage.destinations) or "unknown"
            out.append(f"  LEAK during {stage.name}: {stage.egress} packets to {shown}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("dist/bundle"))
    parser.add_argument("--pubkey", type=Path, default=Path("keys/bundle-signing.pub.pem"))
    parser.add_argument("--prefix", type=Path, default=Path("dist/demo-host"))
    parser.add_argument("--python", default="python3.11")
    parser.add_argument("--rows", type=int, default=0, help="sample rows (default: the sample's)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--model",
        default=TINY,
        help="the SFT stage's base: tiny (built on the host) or the name of a bundled [[model]]",
    )
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    isolate = check_prerequisites(prerequisites(repo), root=os.geteuid() == 0)
    gap = AirGap() if isolate else None
    if gap is None:
        print(
            "demo: WARNING: cannot create a network namespace (needs root, ip and nft):"
            " running the isolated phase IN PLACE; the air-gap proof is SKIPPED",
            file=sys.stderr,
        )
    shutil.rmtree(args.prefix, ignore_errors=True)
    start = time.perf_counter()
    demo = Demo(
        args.bundle, args.pubkey, args.prefix, args.python, args.rows, args.port, gap, args.model
    )
    if gap:
        gap.__enter__()
    try:
        figures = run(demo, repo)
        if gap:
            demo.counted = gap.packets()
    finally:
        if gap:
            gap.close()
    total = time.perf_counter() - start
    print(summary(demo, figures, total))
    leaked, probes = demo.egress() if gap else (None, None)
    if args.json:
        record = {
            "stages": [s.__dict__ for s in demo.stages],
            "figures": figures,
            "airgap_packets": leaked,
            "doctor_probe_packets": probes,
            "total_seconds": total,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if leaked:
        print("demo: FAILED: something tried to leave the isolated host", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
