"""offline mirror serve: pip installs through it, and nothing outside the index leaks out."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from offline.bundle.build import build
from offline.bundle.mirror import Mirror, MirrorServer, create_server
from offline.bundle.pipenv import hermetic_pip_env
from offline.errors import ConfigError, NotFoundError, ResourceError
from tests.fixtures import processes
from tests.fixtures.specs import SpecFactory

WHEEL = "foo_bar-1.0-py3-none-any.whl"
PIP = "PIP_CONFIG_FILE=/dev/null pip --isolated install"
SECRET = "secret outside the index"


def _netns(
    script: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run bash ``script`` in a fresh network namespace with only loopback up; on a timeout,
    everything it started is killed too."""
    env = {**(env or hermetic_pip_env()), "PY": sys.executable}
    wrapped = f"set -u\nip link set lo up\n{script}"
    return processes.run(["unshare", "-n", "bash", "-c", wrapped], env=env, timeout=timeout)


# Starts the mirror in the background (args in $SERVE) and waits until it accepts connections
# (up to a minute: a loaded machine can take many seconds to import the server). A background
# job of a script ignores SIGINT: the mirror is stopped with SIGTERM, as systemd stops it.
_START = """
"$PY" -m offline mirror serve $SERVE >"$LOG.out" 2>"$LOG.err" &
server=$!
trap 'kill -KILL "$server" 2>/dev/null' EXIT
for _ in $(seq 1200); do
    (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null && break
    sleep 0.05
done
"""
_STOP = 'kill -TERM "$server"; wait "$server"; echo "server exit $?"\n'


@pytest.mark.integration
def test_pip_installs_the_lock_through_the_mirror(make_spec: SpecFactory, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    build(make_spec(), bundle, cache_dir=tmp_path / "cache")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    log = tmp_path / "mirror"
    # The pip command is the one the mirror printed, run against the new venv, on a host whose
    # own pip configuration (this machine's, plus a constraint and an index that contradict
    # the lock) must not matter.
    (tmp_path / "constraints.txt").write_text("beta==1.0\n")
    hostile = {
        **os.environ,
        "PIP_CONSTRAINT": str(tmp_path / "constraints.txt"),
        "PIP_EXTRA_INDEX_URL": "http://192.0.2.1/simple",
        "PIP_DEFAULT_TIMEOUT": "600",
    }
    prefix = "  PIP_CONFIG_FILE=/dev/null pip "
    script = f"""
SERVE={bundle} LOG={log}
{_START}
printed=$(grep -m1 '^{prefix}' "$LOG.out" | sed 's|^{prefix}||')
echo "running: pip $printed"
PIP_CONFIG_FILE=/dev/null "$PY" -m pip --python {venv}/bin/python $printed --no-cache-dir
echo "pip exit $?"
{_STOP}"""
    proc = _netns(script, env=hostile)
    out, err = Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()
    assert "pip exit 0" in proc.stdout, proc.stdout + proc.stderr + err
    assert "server exit 0" in proc.stdout
    assert "serving" in out and "http://127.0.0.1:8000/simple/" in out
    url = "http://127.0.0.1:8000"
    command = (
        f"PIP_CONFIG_FILE=/dev/null pip --isolated install --index-url {url}/simple/"
        f" --require-hashes -r {url}/locks/app.lock"
    )
    assert f"  {command}\n" in out
    assert "warning" not in err
    assert '"GET /wheels/beta-2.0-py3-none-any.whl HTTP/1.1" 200' in err
    check = "import alpha, beta, gamma, delta; print(beta.VERSION, gamma.BUILT)"
    ran = subprocess.run([venv / "bin/python", "-c", check], capture_output=True, text=True)
    assert ran.stdout.split() == ["2.0", "True"], ran.stderr


def _tree(root: Path) -> Path:
    """A hand-made bundle: one project, one wheel, one lock, and files that must stay private."""
    (root / "simple" / "foo-bar").mkdir(parents=True)
    (root / "simple" / "index.html").write_text('<a href="foo-bar/">foo-bar</a>\n')
    page = f'<a href="../../wheels/{WHEEL}#sha256=00">{WHEEL}</a>\n'
    (root / "simple" / "foo-bar" / "index.html").write_text(page)
    (root / "wheels").mkdir()
    (root / "wheels" / WHEEL).write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (root / "wheels" / ".hidden").write_text(SECRET)
    (root / "locks").mkdir()
    (root / "locks" / "app.lock").write_text("foo-bar==1.0 --hash=sha256:00\n")
    (root / "manifest.json").write_text(SECRET)
    (root.parent / "outside.txt").write_text(SECRET)
    (root / "wheels" / "escape.whl").symlink_to(root.parent / "outside.txt")
    return root


@contextmanager
def _serving(bundle: Path) -> Iterator[MirrorServer]:
    server = create_server(bundle, "127.0.0.1:0")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _request(server: MirrorServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.mirror.port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[MirrorServer]:
    with _serving(_tree(tmp_path / "bundle")) as server:
        yield server


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("/", 301, "/simple/"),
        ("/simple", 301, "/simple/"),
        ("/simple/", 200, None),
        ("/simple/foo-bar/", 200, None),
        ("/simple/foo-bar", 301, "/simple/foo-bar/"),
        ("/simple/Foo_Bar/", 301, "/simple/foo-bar/"),
        ("/simple/FOO.bar", 301, "/simple/foo-bar/"),
        ("/simple/foo-bar/index.html", 301, "/simple/foo-bar/"),
        ("/simple/nothing-here/", 404, None),
        (f"/wheels/{WHEEL}", 200, None),
        (f"/wheels/{WHEEL}?x=1", 200, None),
        ("/locks/app.lock", 200, None),
        ("/wheels/", 404, None),
        ("/locks/", 404, None),
        ("/wheels/missing.whl", 404, None),
        ("/simple/foo-bar/extra/", 404, None),
    ],
)
def test_routes(mirror: MirrorServer, path: str, status: int, location: str | None) -> None:
    got, headers, body = _request(mirror, "GET", path)
    assert got == status
    assert headers.get("Location") == location
    assert int(headers["Content-Length"]) == len(body)


@pytest.mark.integration
def test_pages_and_files_are_the_bundle_bytes(mirror: MirrorServer) -> None:
    root = mirror.root
    status, headers, body = _request(mirror, "GET", "/simple/foo-bar/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == (root / "simple" / "foo-bar" / "index.html").read_bytes()
    status, headers, body = _request(mirror, "GET", f"/wheels/{WHEEL}")
    assert status == 200 and body == (root / "wheels" / WHEEL).read_bytes()
    status, headers, body = _request(mirror, "HEAD", f"/wheels/{WHEEL}")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str((root / "wheels" / WHEEL).stat().st_size)
    assert headers["Server"].startswith("offline-mirror") and "Python" not in headers["Server"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    [
        "/../manifest.json",
        "/manifest.json",
        "/simple/../../etc/passwd",
        "/simple/../manifest.json",
        "/%2e%2e/manifest.json",
        "/simple/%2e%2e/%2e%2e/outside.txt",
        "/wheels/..%2fmanifest.json",
        "/wheels/%2e%2e%2f%2e%2e%2foutside.txt",
        "/wheels/.hidden",
        "/wheels/escape.whl",
        "/locks/..%5c..%5cmanifest.json",
        "/simple/foo-bar/%00",
        "//etc/passwd",
        "/etc/passwd",
    ],
)
def test_nothing_outside_the_index_is_served(mirror: MirrorServer, path: str) -> None:
    for method in ("GET", "HEAD"):
        status, _, body = _request(mirror, method, path)
        assert status in (403, 404), f"{method} {path} -> {status}"
        assert SECRET.encode() not in body and b"root:" not in body


@pytest.mark.integration
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head(mirror: MirrorServer, method: str) -> None:
    status, headers, _ = _request(mirror, method, "/simple/")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert _request(mirror, "BREW", "/simple/")[0] == 501
    assert (mirror.root / "simple" / "index.html").is_file()


def test_bundle_without_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    with pytest.raises(NotFoundError) as caught:
        create_server(tmp_path, "127.0.0.1:0")
    assert str(tmp_path / "simple") in caught.value.message and caught.value.fix
    proc = subprocess.run(
        [sys.executable, "-m", "offline", "mirror", "serve", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == NotFoundError.exit_code
    assert "has no package index" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("bind", ["8000", "127.0.0.1", "127.0.0.1:99999", "http://x:80", "[::1"])
def test_malformed_bind(tmp_path: Path, bind: str) -> None:
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        create_server(_tree(tmp_path / "bundle"), bind)


@pytest.mark.integration
def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ResourceError, match="in use") as caught:
            create_server(_tree(tmp_path / "bundle"), f"127.0.0.1:{port}")
    assert "--bind" in str(caught.value.fix)


@pytest.mark.integration
def test_lan_bind_warns_and_prints_trusted_host(tmp_path: Path) -> None:
    bundle, log = _tree(tmp_path / "bundle"), tmp_path / "mirror"
    script = f"SERVE='{bundle} --bind 0.0.0.0:8000' LOG={log}\n{_START}{_STOP}"
    proc = _netns(script)
    assert "server exit 0" in proc.stdout, proc.stderr
    out, err = Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()
    assert "warning: listening on every address of this host" in err
    assert "--bind 127.0.0.1:PORT" in err
    host = f"{socket.gethostname()}:8000"
    assert f"--index-url http://{host}/simple/ --trusted-host {host}" in out


def test_sigterm_stops_the_mirror_even_where_sigint_is_ignored(tmp_path: Path) -> None:
    """A mirror started in the background by a script (SIGINT ignored) stops on SIGTERM."""
    bundle, log = _tree(tmp_path / "bundle"), tmp_path / "mirror"
    script = f"SERVE={bundle} LOG={log}\n{_START}{_STOP}"
    proc = _netns(f"trap '' INT\n{script}", timeout=90)
    assert "server exit 0" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("host", "loopback", "expected"),
    [
        ("127.0.0.1", True, f"{PIP} --index-url http://127.0.0.1:8000/simple/ "),
        ("10.0.0.5", False, f"{PIP} --index-url http://10.0.0.5:8000/simple/ "
         "--trusted-host 10.0.0.5:8000 "),
        ("fd00::1", False, f"{PIP} --index-url http://[fd00::1]:8000/simple/ "
         "--trusted-host [fd00::1]:8000 "),
    ],
)  # fmt: skip
def test_pip_commands(host: str, loopback: bool, expected: str) -> None:
    mirror = Mirror(Path("b"), host, 8000, loopback, False, ("app.lock", "bootstrap.lock"))
    url = mirror.url
    assert mirror.pip_commands() == [
        f"{expected}--require-hashes -r {url}/locks/app.lock",
        f"{expected}--require-hashes -r {url}/locks/bootstrap.lock",
    ]
    bare = Mirror(Path("b"), host, 8000, loopback, False, ())
    assert bare.pip_commands() == [f"{expected}PACKAGE"]
