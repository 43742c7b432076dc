"""Label Studio on PostgreSQL (``--db-url``): a throwaway cluster on loopback, a real server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("the throwaway cluster runs as the postgres user (needs root; CI is root)")
    if not (PG_BIN / "initdb").is_file():
        pytest.fail("PostgreSQL 15 is not installed; run scripts/install-test-deps.sh")
    # Not under pytest's tmp dir: that is root's alone (0700) and the cluster runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="dso-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(base, "postgres")
    shutil.chown(sock, "postgres")
    os.chmod(base, 0o755)
    # Local socket connections are trusted (the test sets up the role); TCP needs a password.
    as_postgres(
        str(PG_BIN / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
    )
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    as_postgres(
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        opts,
        "-w",
        "start",
        "-l",
        str(base / "pg.log"),
    )
    try:
        for sql in ("CREATE USER ls PASSWORD 'ls-secret-123'", "CREATE DATABASE ls OWNER ls"):
            as_postgres("psql", "-h", str(sock), "-p", str(port), "-c", sql)
        yield f"postgresql://ls:ls-secret-123@127.0.0.1:{port}/ls"
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_label_studio_keeps_its_data_in_postgresql(postgres: str, tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts/install-labelstudio-venv.sh")], check=True)
    ws = tmp_path / "ws"
    ws.mkdir()
    offline = [str(BIN / "offline"), "label", "server"]
    port = str(free_port())
    try:  # a start that fails or times out half way may have left the server running
        start = subprocess.run(
            [*offline, "start", "-w", str(ws), "--port", port, "--db-url", postgres, "--json"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert start.returncode == 0, start.stderr + (ws / ".labelstudio/server.log").read_text()
        assert json.loads(start.stdout)["url"] == f"http://127.0.0.1:{port}"
        assert not list((ws / ".labelstudio/data").glob("*.sqlite3"))
        script = (
            "from pathlib import Path\n"
            "from offline.labeling.project import client\n"
            "ls = client(Path(__import__('sys').argv[1]))\n"
            "ls.projects.create(title='kept in postgres', label_config='<View><Text name=\"t\" "
            'value="$t"/></View>\')\n'
        )
        subprocess.run([sys.executable, "-c", script, str(ws)], check=True, timeout=120)
        url = postgres.rsplit("@", 1)[1]
        host_port, db = url.split("/")
        query = subprocess.run(
            [
                "psql",
                f"postgresql://ls:ls-secret-123@{host_port}/{db}",
                "-At",
                "-c",
                "SELECT title FROM project",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "kept in postgres" in query.stdout.splitlines()
    finally:
        subprocess.run([*offline, "stop", "-w", str(ws)], capture_output=True, timeout=60)
