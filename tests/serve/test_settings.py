"""Settings from options and OFFLINE_SERVE_* variables; the systemd unit and its env file."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline.cli.serve import settings_from
from offline.errors import ConfigError
from offline.serve.settings import ServeSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy/serve"


def test_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLINE_SERVE_MODEL", "/srv/models/lm")
    monkeypatch.setenv("OFFLINE_SERVE_MAX_BATCH", "8")
    s = settings_from({"max_batch": None, "port": 9000})
    assert (s.model, s.max_batch, s.port, s.host) == (Path("/srv/models/lm"), 8, 9000, "127.0.0.1")
    assert settings_from({"max_batch": 4}).max_batch == 4


def test_bad_settings_are_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFFLINE_SERVE_MODEL", raising=False)
    with pytest.raises(ConfigError) as err:
        settings_from({"max_batch": 0})
    assert "model: Field required" in err.value.message
    assert "max_batch: Input should be greater than or equal to 1" in err.value.message


def test_the_env_file_names_only_real_settings() -> None:
    names = []
    for line in (DEPLOY / "deepseek-serve.env").read_text().splitlines():
        line = line.lstrip("#").strip()
        if line.startswith("OFFLINE_SERVE_"):
            names.append(line.split("=", 1)[0].removeprefix("OFFLINE_SERVE_").lower())
    assert names and set(names) <= set(ServeSettings.model_fields)
    assert {"model", "api_keys", "audit_log", "host"} <= set(names)


def test_the_unit_is_hardened() -> None:
    unit = (DEPLOY / "deepseek-serve.service").read_text()
    assert "ExecStart=/opt/deepseek-offline/envs/toolkit/bin/offline serve" in unit
    for directive in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "CapabilityBoundingSet=\n",
        "IPAddressDeny=any",
        "EnvironmentFile=/etc/deepseek-offline/serve.env",
    ):
        assert directive in unit, directive
