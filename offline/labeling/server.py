"""The local Label Studio server: start, stop, status, with every path that phones home off.

Label Studio runs from its own environment (it pins many packages):
``$DEEPSEEK_OFFLINE_LABEL_STUDIO`` names the executable, else the bundle's sibling env
(``envs/labelstudio``), else a source checkout's ``.venv-labelstudio``, else ``label-studio``
on PATH. Its state lives in the workspace
under ``.labelstudio/``: the SQLite data (or PostgreSQL through ``--db-url``), the admin secret
(created on first start, mode 0600), the pid, the log. It binds 127.0.0.1 unless told otherwise;
a LAN address needs an operator-chosen password file and prints a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from offline import airgap
from offline.errors import ConfigError, NetworkError, NotFoundError, ToolError
from offline.fsutil import atomic_write_bytes, atomic_write_text

STATE_DIR = ".labelstudio"
ADMIN = "admin@deepseek-offline.local"
ENV_EXECUTABLE = "DEEPSEEK_OFFLINE_LABEL_STUDIO"
INSTALL_FIX = (
    "install it: `bash scripts/install-labelstudio-venv.sh` (source checkout) or install the"
    f" bundle's labelstudio env, or set ${ENV_EXECUTABLE} to its label-studio executable"
)

# Every telemetry path Label Studio has, off: backend and page Sentry, analytics, version check.
OFFLINE_ENV = {
    **airgap.OFFLINE_ENV,
    **airgap.LABEL_STUDIO_ENV,
    "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class Secret:
    """The admin login and API token; stored in ``.labelstudio/secret.json`` (0600)."""

    username: str
    password: str
    token: str


@dataclass
class ServerStatus:
    """Whether the workspace's server is up, and where."""

    running: bool
    url: str | None
    pid: int | None
    detail: str


def state_dir(workspace: Path) -> Path:
    return workspace / STATE_DIR


def find_executable() -> Path:
    """The ``label-studio`` executable from its own environment (see the module docstring)."""
    named = os.environ.get(ENV_EXECUTABLE)
    if named:
        path = Path(named)
        if not path.is_file():
            raise NotFoundError(
                f"${ENV_EXECUTABLE} names {path}, which does not exist", fix=INSTALL_FIX
            )
        return path
    here = Path(sys.prefix)
    candidates = [
        here.parent
        / "labelstudio"
        / "bin"
        / "label-studio",  # bundle: envs/toolkit -> envs/labelstudio
        Path.cwd() / ".venv-labelstudio" / "bin" / "label-studio",
        Path(__file__).resolve().parents[2] / ".venv-labelstudio" / "bin" / "label-studio",
    ]
    for path in candidates:
        if path.is_file():
            return path
    from shutil import which

    found = which("label-studio")
    if found:
        return Path(found)
    raise NotFoundError("Label Studio is not installed", fix=INSTALL_FIX)


def load_secret(workspace: Path) -> Secret:
    """The workspace's admin secret; NotFoundError before the first start."""
    path = state_dir(workspace) / "secret.json"
    if not path.is_file():
        raise NotFoundError(
            f"no Label Studio secret in {path.parent}",
            fix=f"start the server once: `offline label server start --workspace {workspace}`",
        )
    return Secret(**json.loads(path.read_text(encoding="utf-8")))


def _ensure_secret(workspace: Path, password_file: Path | None) -> Secret:
    path = state_dir(workspace) / "secret.json"
    if path.is_file():
        secret = load_secret(workspace)
        if password_file is None:
            return secret
        secret = Secret(secret.username, _read_password(password_file), secret.token)
    else:
        password = _read_password(password_file) if password_file else secrets.token_urlsafe(18)
        # The legacy token format: 40 hex characters.
        secret = Secret(ADMIN, password, secrets.token_hex(20))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(asdict(secret), indent=2).encode(), mode=0o600)
    return secret


def _read_password(path: Path) -> str:
    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc.strerror}") from None
    if len(password) < 12:
        raise ConfigError(
            f"the password in {path} is shorter than 12 characters",
            fix="write a longer password into the file (e.g. `openssl rand -base64 18 > FILE`)",
        )
    return password


def _database_env(db_url: str | None, data: Path) -> dict[str, str]:
    if db_url is None:
        return {"DJANGO_DB": "sqlite", "LABEL_STUDIO_BASE_DATA_DIR": str(data)}
    url = urlparse(db_url)
    if url.scheme not in ("postgres", "postgresql") or not url.hostname or not url.path.strip("/"):
        raise ConfigError(
            f"--db-url {url.scheme}://... is not a PostgreSQL URL",
            fix="use postgresql://USER:PASSWORD@HOST:PORT/DBNAME, or leave it out for SQLite",
        )
    return {
        "DJANGO_DB": "default",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "POSTGRE_NAME": url.path.strip("/"),
        "POSTGRE_USER": unquote(url.username or ""),
        "POSTGRE_PASSWORD": unquote(url.password or ""),
        "POSTGRE_HOST": url.hostname,
        "POSTGRE_PORT": str(url.port or 5432),
    }


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when ``url/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _server_json(workspace: Path) -> dict[str, object] | None:
    path = state_dir(workspace) / "server.json"
    if not path.is_file():
        return None
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def status(workspace: Path) -> ServerStatus:
    """Whether this workspace's server process lives and answers its health endpoint."""
    info = _server_json(workspace)
    if info is None:
        return ServerStatus(False, None, None, "not started in this workspace")
    pid, url = int(str(info["pid"])), str(info["url"])
    if not _pid_alive(pid):
        return ServerStatus(False, url, pid, f"process {pid} is gone (see {STATE_DIR}/server.log)")
    if not healthy(url):
        return ServerStatus(False, url, pid, f"process {pid} runs but {url}/health does not answer")
    return ServerStatus(True, url, pid, "up")


@dataclass
class Started:
    url: str
    pid: int
    username: str
    secret_file: Path
    seconds: float
    already: bool = False
    warning: str | None = None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(
    workspace: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    db_url: str | None = None,
    password_file: Path | None = None,
    timeout: float = 300.0,
) -> Started:
    """Start Label Studio for ``workspace`` and wait until it answers its health endpoint.

    Raises:
        ConfigError: a LAN bind without ``password_file``, a busy port, a bad ``db_url``.
        NotFoundError: Label Studio is not installed.
        ToolError: the server exited or did not come up in ``timeout`` seconds (log tail shown).
    """
    warning = None
    if not airgap.is_loopback(host):
        if password_file is None:
            raise ConfigError(
                f"binding Label Studio to {host} exposes it to the network;"
                " refusing without a password file",
                fix="pass --password-file FILE with a strong admin password, or bind 127.0.0.1",
            )
        warning = (
            f"Label Studio listens on {host}:{port}: anyone who can reach it sees the login page"
        )
    current = status(workspace)
    if current.running and current.url and current.pid:
        secret = load_secret(workspace)
        return Started(
            current.url,
            current.pid,
            secret.username,
            state_dir(workspace) / "secret.json",
            0.0,
            True,
        )
    if not _port_free(host if host not in ("", "localhost") else "127.0.0.1", port):
        raise ConfigError(f"port {port} on {host} is in use", fix="choose another with --port")
    executable = find_executable()
    state = state_dir(workspace)
    (state / "data").mkdir(parents=True, exist_ok=True)
    secret = _ensure_secret(workspace, password_file)
    env = {
        **os.environ,
        **OFFLINE_ENV,
        **_database_env(db_url, (state / "data").resolve()),
        "LABEL_STUDIO_USERNAME": secret.username,
        "LABEL_STUDIO_PASSWORD": secret.password,
        "LABEL_STUDIO_USER_TOKEN": secret.token,
    }
    command = [
        str(executable),
        "start",
        "--no-browser",
        "--internal-host",
        host,
        "--port",
        str(port),
    ]
    log = state / "server.log"
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command,
            cwd=state,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = url_for(host, port)
    atomic_write_text(
        state / "server.json",
        json.dumps({"pid": proc.pid, "url": url, "host": host, "port": port}, indent=2) + "\n",
    )
    while not healthy(url):
        if proc.poll() is not None:
            raise ToolError(
                f"Label Studio exited with code {proc.returncode} while starting:\n{_tail(log)}",
                fix=f"see {log}",
            )
        if time.monotonic() - started > timeout:
            _terminate(proc.pid)
            raise ToolError(
                f"Label Studio did not answer {url}/health within {timeout:.0f} s:\n{_tail(log)}",
                fix=f"see {log}; a first start migrates its database and can take minutes",
            )
        time.sleep(0.5)
    return Started(
        url,
        proc.pid,
        secret.username,
        state / "secret.json",
        time.monotonic() - started,
        warning=warning,
    )


def _terminate(pid: int, grace: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(workspace: Path) -> bool:
    """Stop the workspace's server; False when none was running."""
    info = _server_json(workspace)
    if info is None:
        return False
    pid = int(str(info["pid"]))
    running = _pid_alive(pid)
    if running:
        _terminate(pid)
    (state_dir(workspace) / "server.json").unlink(missing_ok=True)
    return running


def require_running(workspace: Path) -> tuple[str, Secret]:
    """The server's URL and secret, or a NetworkError that shows the start command."""
    current = status(workspace)
    if not current.running or current.url is None:
        raise NetworkError(
            f"Label Studio is not running for {workspace} ({current.detail})",
            fix=f"offline label server start --workspace {workspace}",
        )
    return current.url, load_secret(workspace)
