"""deepseek-doctor: the runner, the report formats and exit codes, and the core groups (python,
offline posture, bundle) against a real installed bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from offline.audit.chain import verify as audit_verify
from offline.bundle.sign import keygen, load_public_key
from offline.doctor import report as render
from offline.doctor.checks import posture
from offline.doctor.context import Context
from offline.doctor.model import Check, Result, passed, problem, shown_env
from offline.doctor.runner import Report, diagnose, run_checks
from offline.doctor.schema import SCHEMA
from tests.bundle.test_tamper import bash_install, flip_byte
from tests.fixtures.specs import SignedBundle

OFFLINE_ENV = {name: good[0] for name, good in posture.REQUIRED.items()}


def _sleepy(context: Context) -> Result:
    time.sleep(30)
    return passed("never")


def _crash(context: Context) -> Result:
    raise KeyError("boom")


def test_runner_isolates_crashes_and_timeouts() -> None:
    checks = [
        Check("t.ok", "t", "fine", lambda c: passed("fine")),
        Check("t.crash", "t", "raises", _crash),
        Check("t.hang", "t", "hangs", _sleepy, timeout=0.5),
        Check("t.warn", "t", "a warning", lambda c: problem("meh", "do x"), "warning"),
        Check("t.bad", "t", "a failure", lambda c: problem("bad", "do y")),
    ]
    started = time.monotonic()
    found = {f.id: f for f in run_checks(checks, Context(environ={}))}
    assert time.monotonic() - started < 10  # the hung check does not hold the report
    assert found["t.ok"].status == "pass"
    assert found["t.crash"].status == "error" and "KeyError" in found["t.crash"].message
    assert found["t.hang"].status == "error" and "timed out" in found["t.hang"].message
    assert found["t.warn"].status == "warn" and found["t.bad"].status == "fail"
    assert all(f.fix for f in found.values() if f.status != "pass")


def test_secret_values_are_never_shown() -> None:
    assert shown_env("HF_TOKEN", "hf_abc") == "<redacted>"
    assert shown_env("AWS_SECRET_ACCESS_KEY", "x") == "<redacted>"
    assert shown_env("HF_HUB_OFFLINE", "1") == "1"


def test_offline_posture() -> None:
    good = diagnose(Context(environ=OFFLINE_ENV), only=["offline"])
    assert good.ok and {f.status for f in good.findings} == {"pass"}
    env = {**OFFLINE_ENV, "HF_HUB_OFFLINE": "0", "SENTRY_DSN": "https://key@sentry.io/1"}
    env.pop("WANDB_MODE")
    bad = {f.id: f for f in diagnose(Context(environ=env), only=["offline"]).findings}
    assert bad["offline.HF_HUB_OFFLINE"].status == "fail"
    assert (
        bad["offline.WANDB_MODE"].status == "fail" and "unset" in bad["offline.WANDB_MODE"].message
    )
    assert bad["offline.ls-SENTRY_DSN"].status == "fail"
    assert all("export" in (f.fix or "") or "unset" in (f.fix or "") for f in bad.values() if f.fix)


# --- python: the locks against what is installed ----------------------------------------------


def _fake_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _prefix_with_env(tmp_path: Path, locked: dict[str, str], installed: dict[str, str]) -> Path:
    """PREFIX/bundle (a manifest with one env's lock) and PREFIX/envs/toolkit (a real venv)."""
    prefix = tmp_path / "opt"
    manifest = {
        "target": {"python": "3.11", "platforms": ["manylinux_2_28_x86_64"]},
        "envs": [
            {
                "name": "toolkit",
                "packages": [{"name": n, "version": v} for n, v in locked.items()],
            }
        ],
        "files": [],
    }
    (prefix / "bundle").mkdir(parents=True)
    (prefix / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    venv = prefix / "envs" / "toolkit"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3.*/site-packages"))
    for name, version in installed.items():
        _fake_dist(site, name, version)
    return prefix


def test_lock_against_installed_packages(tmp_path: Path) -> None:
    prefix = _prefix_with_env(
        tmp_path,
        locked={"alpha": "1.0", "beta": "2.0", "gamma": "1.0"},
        installed={"alpha": "1.0", "beta": "1.5", "stowaway": "9.9"},
    )
    context = Context.create(prefix / "bundle", environ=OFFLINE_ENV)
    found = {f.id: f for f in diagnose(context, only=["python"]).findings}
    assert found["py.toolkit.pkg.alpha"].status == "pass"
    beta = found["py.toolkit.pkg.beta"]
    assert beta.status == "fail" and "beta 1.5 is installed; the lock says 2.0" in beta.message
    gamma = found["py.toolkit.pkg.gamma"]
    assert gamma.status == "fail" and "not installed" in gamma.message and gamma.fix
    extra = found["py.toolkit.extra-packages"]
    assert extra.status == "warn" and "stowaway" in extra.message
    assert found["py.toolkit.version"].status == "pass"
    assert found["py.toolkit.venv"].status == "pass"


# --- bundle: against a real install ------------------------------------------------------------


def _install(bundle: SignedBundle, prefix: Path) -> Path:
    done = bash_install(bundle.path, bundle.pub, prefix)
    assert done.returncode == 0, done.stderr
    return prefix


@pytest.fixture(scope="module")
def installed(signed_bundle: SignedBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One install for the read-only tests of this module."""
    return _install(signed_bundle, tmp_path_factory.mktemp("doctor") / "opt")


@pytest.mark.slow
def test_bundle_checks_on_a_real_install(installed: Path) -> None:
    context = Context.create(installed / "bundle", environ=OFFLINE_ENV)
    assert context.pubkey == installed / "etc" / "trusted.pub.pem"  # what the install recorded
    result = diagnose(context, only=["bundle", "models", "python"])
    found = {f.id: f for f in result.findings}
    for check in ("bundle.manifest", "bundle.signature", "bundle.files", "bundle.installed"):
        assert found[check].status == "pass", found[check]
    assert found["models.tiny"].status == "pass"
    assert found["py.app.pkg.beta"].status == "pass"


def test_remote_pip_settings_are_told_apart_from_local_ones() -> None:
    from offline.doctor.checks.python import _is_remote_setting

    assert _is_remote_setting("global.index-url='https://pypi.org/simple'")
    assert _is_remote_setting(":env:.extra-index-url='file:///a http://mirror.lan/simple'")
    assert not _is_remote_setting("site.index-url='file:///opt/deepseek-offline/bundle/simple'")
    assert not _is_remote_setting("global.find-links='/opt/wheels'")
    assert not _is_remote_setting("global.timeout='https://not-an-index'")


@pytest.mark.slow
def test_bundle_tampered_after_install(signed_bundle: SignedBundle, tmp_path: Path) -> None:
    bundle = _install(signed_bundle, tmp_path / "opt") / "bundle"
    wheel = bundle / "wheels" / "beta-2.0-py3-none-any.whl"
    stat = wheel.stat()
    flip_byte(wheel)  # same size; put the old mtime back: only --deep can tell
    os.utime(wheel, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    quick = {f.id: f for f in diagnose(Context.create(bundle), only=["bundle"]).findings}
    assert quick["bundle.files"].status == "pass"
    deep = {f.id: f for f in diagnose(Context.create(bundle, deep=True), only=["bundle"]).findings}
    assert deep["bundle.files"].status == "fail" and "beta-2.0" in deep["bundle.files"].message

    (bundle / "locks" / "app.lock").write_text("edited by hand\n")
    quick = {f.id: f for f in diagnose(Context.create(bundle), only=["bundle"]).findings}
    assert (
        quick["bundle.files"].status == "fail" and "locks/app.lock" in quick["bundle.files"].message
    )


def test_signature_under_another_key_fails(installed: Path, tmp_path: Path) -> None:
    from offline.bundle.sign import keygen

    _, other = keygen(tmp_path / "other" / "key.pem")
    context = Context.create(installed / "bundle", pubkey=other)
    found = {f.id: f for f in diagnose(context, only=["bundle.signature"]).findings}
    assert found["bundle.signature"].status == "fail"
    assert "different key" in found["bundle.signature"].message


# --- reports and the command ------------------------------------------------------------------


def _report(installed: Path) -> Report:
    env = {**OFFLINE_ENV, "HF_HUB_OFFLINE": "0"}
    return diagnose(
        Context.create(installed / "bundle", environ=env), skip=["network", "frameworks"]
    )


def test_reports_validate_and_stand_alone(installed: Path) -> None:
    result = _report(installed)
    data = json.loads(render.to_json(result))
    jsonschema.validate(data, SCHEMA)
    assert data["ok"] is False and data["summary"]["fail"] >= 1
    assert all(c["fix"] for c in data["checks"] if c["status"] in ("fail", "warn", "error"))

    page = render.to_html(result)
    assert "offline.HF_HUB_OFFLINE" in page
    assert "src=" not in page and "href=" not in page and "@import" not in page  # self-contained

    suites = ET.fromstring(render.to_junit(result).split("?>", 1)[1])
    cases = {c.get("name"): c for c in suites.iter("testcase")}
    assert cases["offline.HF_HUB_OFFLINE"].find("failure") is not None
    assert cases["bundle.signature"].find("failure") is None


def _doctor(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("deepseek-doctor")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_exit_codes_and_outputs(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, **OFFLINE_ENV}
    bundle = installed / "bundle"
    ok = _doctor("--bundle", bundle, "--only", "bundle", "--only", "offline", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ready:" in ok.stdout

    env["HF_HUB_OFFLINE"] = "0"
    html, junit = tmp_path / "r.html", tmp_path / "r.xml"
    failed = _doctor("--bundle", bundle, "--only", "offline", "--json", "--html", html,
                     "--junit", junit, env=env)  # fmt: skip
    assert failed.returncode == 1
    jsonschema.validate(json.loads(failed.stdout), SCHEMA)
    assert html.read_text().startswith("<!DOCTYPE html>") and junit.read_text().startswith("<?xml")

    # each run's report on a hash-chained log, signed with the site key: offline evidence
    # takes the newest
    site, site_pub = keygen(tmp_path / "site.pem")
    log = tmp_path / "logs/doctor.jsonl"
    env["DEEPSEEK_OFFLINE_SITE_KEY"] = str(site)
    for _ in range(2):
        _doctor("--bundle", bundle, "--only", "offline", "--log", log, env=env)
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    reports = [r["report"] for r in runs if r.get("event") == "doctor run"]
    assert len(reports) == 2 and reports[-1]["summary"]["fail"] >= 1
    jsonschema.validate(reports[-1], SCHEMA)
    chain = audit_verify([log], load_public_key(site_pub))
    assert chain.ok and chain.closed and chain.signed == 2, chain.as_dict()

    unknown = _doctor("--only", "no-such-group")
    assert unknown.returncode == 2 and "no check matches no-such-group" in unknown.stderr
    missing = _doctor("--bundle", tmp_path / "nowhere")
    assert missing.returncode == 2 and "fix:" in missing.stderr

    listed = _doctor("--bundle", bundle, "--list")
    assert listed.returncode == 0 and "bundle.signature" in listed.stdout
    same = subprocess.run(
        [sys.executable, "-m", "offline", "doctor", "--bundle", str(bundle), "--list"],
        capture_output=True,
        text=True,
    )
    assert same.stdout == listed.stdout


@pytest.mark.slow
def test_doctor_never_imports_the_heavy_frameworks(installed: Path) -> None:
    code = (
        "import sys, pathlib; from offline.doctor.context import Context;"
        "from offline.doctor.runner import diagnose;"
        f"diagnose(Context.create(pathlib.Path({str(installed / 'bundle')!r})));"
        "heavy = ('torch', 'deepspeed', 'tvm', 'transformers');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


def test_warning_fails_only_under_strict(tmp_path: Path) -> None:
    prefix = _prefix_with_env(tmp_path, {"alpha": "1.0"}, {"alpha": "1.0", "extra": "1"})
    env = {**os.environ, **OFFLINE_ENV}
    args = ("--bundle", prefix / "bundle", "--only", "py.toolkit.extra-packages")
    assert _doctor(*args, env=env).returncode == 0
    assert _doctor(*args, "--strict", env=env).returncode == 1
    shutil.rmtree(prefix)
