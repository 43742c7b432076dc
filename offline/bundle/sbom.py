"""A CycloneDX 1.5 SBOM of the bundle: wheels as pkg:pypi, images as pkg:oci, models."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

from packaging.utils import canonicalize_name


def _hashes(sha256: str) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": sha256}]


def wheel_component(name: str, version: str, filename: str, sha256: str) -> dict[str, Any]:
    purl = f"pkg:pypi/{canonicalize_name(name)}@{quote(version)}?file_name={quote(filename)}"
    return {
        "type": "library",
        "bom-ref": purl,
        "name": name,
        "version": version,
        "purl": purl,
        "hashes": _hashes(sha256),
    }


def image_component(ref: str, digest: str, platform: str) -> dict[str, Any]:
    repo, _, _ = ref.partition("@")
    name_part = repo.rsplit("/", 1)[-1]
    name, _, tag = name_part.partition(":")
    repository = repo.rsplit(":", 1)[0] if tag else repo
    arch = platform.split("/")[1]
    purl = (
        f"pkg:oci/{name}@{quote(digest)}?arch={arch}&repository_url={quote(repository, safe='')}"
        + (f"&tag={tag}" if tag else "")
    )
    return {
        "type": "container",
        "bom-ref": f"{purl}",
        "name": name,
        "version": digest,
        "purl": purl,
        "hashes": _hashes(digest.removeprefix("sha256:")),
    }


def model_component(name: str, source: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "machine-learning-model",
        "bom-ref": f"model:{name}",
        "name": name,
        "properties": [{"name": "deepseek-offline:source", "value": source}],
        "components": [
            {"type": "file", "name": f["path"], "hashes": _hashes(f["sha256"])} for f in files
        ],
    }


def sbom(
    bundle_name: str, bundle_version: str, created: str, tool_version: str, components: list[Any]
) -> dict[str, Any]:
    unique = list({c["bom-ref"]: c for c in components}.values())
    # Same content, same serial: rebuilding an unchanged bundle gives an identical SBOM.
    identity = json.dumps([bundle_name, bundle_version, created, unique], sort_keys=True)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, identity)}",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {
                "components": [
                    {"type": "application", "name": "deepseek-offline", "version": tool_version}
                ]
            },
            "component": {
                "type": "application",
                "name": bundle_name,
                "version": bundle_version,
                "bom-ref": f"bundle:{bundle_name}@{bundle_version}",
            },
        },
        "components": unique,
    }
