"""Doctor checks: the installed bundle is the one that was signed, and unchanged since."""

from __future__ import annotations

from pathlib import Path

from offline.bundle.installed import read_record
from offline.doctor.context import Context
from offline.doctor.host import run
from offline.doctor.model import Check, Result, passed, problem, skipped
from offline.fsutil import sha256_file, sha256_many

_NO_BUNDLE = "no bundle given (--bundle PREFIX/bundle, or DEEPSEEK_OFFLINE_BUNDLE)"
_REINSTALL = "re-run install-offline.sh with the original bundle and the trusted key"


def manifest(context: Context) -> Result:
    if context.bundle is None:
        return skipped(_NO_BUNDLE)
    data = context.manifest
    if data is None:
        return problem(
            f"{context.bundle}/manifest.json is missing or unreadable",
            "point --bundle at the bundle directory install-offline.sh kept (PREFIX/bundle)",
        )
    info = data.get("bundle", {})
    what = f"{info.get('name')} {info.get('version')} ({data.get('kind')})"
    return passed(f"{what}, built {data.get('created')}", files=len(data.get("files", [])))


def _openssl_verify(bundle: Path, pubkey: Path) -> bool:
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pubkey), "-rawin"]
    cmd += ["-in", str(bundle / "manifest.json"), "-sigfile", str(bundle / "manifest.sig")]
    return run(cmd, 10).ok


def signature(context: Context) -> Result:
    if context.bundle is None or context.manifest is None:
        return skipped(_NO_BUNDLE)
    if context.pubkey is None:
        return problem(
            "no trusted public key to check the signature with",
            "pass --pubkey TRUSTED.pub.pem (install-offline.sh keeps it in PREFIX/etc)",
        )
    try:
        from offline.bundle.verify import VerifyReport, check_signature

        report = VerifyReport(str(context.bundle))
        raw = (context.bundle / "manifest.json").read_bytes()
        check_signature(context.bundle, raw, context.pubkey, report)
        ok, why = report.signature == "valid", [p.detail for p in report.problems]
    except ImportError:  # no cryptography in this env: openssl decides
        ok, why = _openssl_verify(context.bundle, context.pubkey), ["openssl: invalid"]
    if ok:
        return passed(f"signature valid under {context.pubkey}")
    return problem(
        "the manifest's signature does not hold: " + "; ".join(why),
        f"do not use this bundle; {_REINSTALL}",
    )


def _installed_at(context: Context) -> float | None:
    assert context.bundle is not None
    record = context.bundle.resolve().parent / "installed.json"
    return record.stat().st_mtime if record.is_file() else None


def files(context: Context) -> Result:
    if context.bundle is None or context.manifest is None:
        return skipped(_NO_BUNDLE)
    bundle, since = context.bundle, _installed_at(context)
    entries = context.manifest.get("files", []) + context.manifest.get("base_files", [])
    entries = [
        e for e in entries if (bundle / e["path"]).exists() or e in context.manifest["files"]
    ]
    missing, changed, later = [], [], []
    for e in entries:
        path = bundle / e["path"]
        if not path.is_file():
            missing.append(e["path"])
        elif path.stat().st_size != e["size"]:
            changed.append(e["path"])
        elif since is not None and path.stat().st_mtime > since + 1:
            later.append(e["path"])
    if context.deep:
        present = {bundle / e["path"]: e for e in entries if (bundle / e["path"]).is_file()}
        digests = sha256_many(list(present))
        changed += [e["path"] for p, e in present.items() if digests[p] != e["sha256"]]
    bad = sorted(set(missing + changed + later))
    how = "sha256" if context.deep else "size and mtime"
    if not bad:
        return passed(f"{len(entries)} files unchanged ({how})", files=len(entries))
    return problem(
        f"{len(bad)} bundle files missing or changed ({how}): {', '.join(bad[:10])}",
        f"offline bundle verify {bundle} --pubkey KEY; then {_REINSTALL}",
        missing=missing[:50],
        changed=sorted(set(changed))[:50],
        modified_after_install=later[:50],
    )


def installed(context: Context) -> Result:
    if context.bundle is None or context.manifest is None:
        return skipped(_NO_BUNDLE)
    record = context.bundle.resolve().parent / "installed.json"
    if not record.is_file():
        return problem(
            f"{record} is missing: install-offline.sh did not finish here",
            "re-run install-offline.sh; it finishes an interrupted install",
        )
    data = read_record(record.parent) or {}
    if data.get("complete") is False:
        return problem(
            "install-offline.sh put this bundle in place but did not finish (envs, settings)",
            "re-run install-offline.sh; it finishes an interrupted install",
        )
    actual = sha256_file(context.bundle / "manifest.json")
    if data.get("manifest_sha256") != actual:
        return problem(
            "the bundle changed since the envs were installed (apply-diff without reinstall?)",
            "install-offline.sh PREFIX/bundle --pubkey KEY --prefix PREFIX",
        )
    signer = data.get("signer_sha256") or "not recorded (installed by an older installer)"
    return passed(
        f"{data.get('name')} {data.get('version')}, built {data.get('created') or 'unknown'}, "
        f"installed {data.get('installed')}, signed by key sha256:{signer}",
        name=data.get("name"),
        version=data.get("version"),
        built=data.get("created"),
        installed=data.get("installed"),
        signer_sha256=data.get("signer_sha256"),
        envs=data.get("envs"),
    )


def checks(context: Context) -> list[Check]:
    return [
        Check("bundle.manifest", "bundle", "manifest present", manifest),
        Check("bundle.signature", "bundle", "signature valid with the trusted key", signature),
        Check(
            "bundle.files",
            "bundle",
            "files unchanged",
            files,
            "critical",
            600 if context.deep else 30,
        ),
        Check(
            "bundle.installed", "bundle", "envs installed from this bundle", installed, "warning"
        ),
    ]
