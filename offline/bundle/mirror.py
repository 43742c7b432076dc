"""Serve a bundle's PEP 503 index over HTTP to LAN hosts, with the standard library only.

Three trees are visible, read-only: ``simple/`` (the index pages), ``wheels/`` (the files those
pages link as ``../../wheels/FILE``) and ``locks/`` (so ``pip install -r URL/locks/app.lock``
works on a host without the bundle). Any other path, any path segment that is not a plain file
name, and any method but GET and HEAD is refused. Nothing is listed except the index pages.
``/simple/NAME/`` with a non-normalized NAME redirects to the PEP 503 normalized name.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from offline.airgap import is_loopback
from offline.errors import ConfigError, NotFoundError, ResourceError

__all__ = ["DEFAULT_BIND", "Mirror", "MirrorServer", "create_server", "serve"]

DEFAULT_BIND = "127.0.0.1:8000"

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!~-]*$")
_BIND = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})$")
_WILDCARD = ("", "0.0.0.0", "::")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".lock": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".whl": "application/zip",
    ".gz": "application/gzip",
}


@dataclass(frozen=True)
class Mirror:
    """Where a running mirror answers and how pip uses it."""

    bundle: Path
    host: str
    port: int
    loopback: bool
    wildcard: bool
    locks: tuple[str, ...]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"

    def pip_commands(self) -> list[str]:
        """One ``pip install`` per lock file (or a bare one when the bundle has no locks).

        The command reads no pip configuration of the host it runs on (config files, ``PIP_*``
        variables): an extra index, find-links or constraints file there would otherwise join
        the mirror in what pip installs.
        """
        base = f"PIP_CONFIG_FILE=/dev/null pip --isolated install --index-url {self.index_url}"
        if not self.loopback:  # pip refuses a plain-HTTP index on any other host without this
            base += f" --trusted-host {self.url.removeprefix('http://')}"
        if not self.locks:
            return [f"{base} PACKAGE"]
        return [f"{base} --require-hashes -r {self.url}/locks/{name}" for name in self.locks]


class MirrorServer(ThreadingHTTPServer):
    """A threading HTTP server over one bundle; ``mirror`` says where it answers."""

    daemon_threads = True

    def __init__(self, bundle: Path, host: str, port: int) -> None:
        self.root = bundle.resolve()
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        bound_port = int(self.socket.getsockname()[1])
        self.mirror = Mirror(
            bundle=bundle,
            host=socket.gethostname() if host in _WILDCARD else host,
            port=bound_port,
            loopback=is_loopback(host),
            wildcard=host in _WILDCARD,
            locks=tuple(sorted(p.name for p in (self.root / "locks").glob("*.lock"))),
        )

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for this host's FQDN; an isolated host has no DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


def create_server(bundle: Path, bind: str = DEFAULT_BIND) -> MirrorServer:
    """Bind a mirror of ``bundle``'s index to ``bind`` (``HOST:PORT``; port 0 picks one).

    The caller runs ``serve_forever()`` (in a thread, for tests) and closes it.

    Raises:
        NotFoundError: the bundle has no ``simple/`` index.
        ConfigError, ResourceError: ``bind`` is malformed, not an address here, or in use.
    """
    if not (bundle / "simple" / "index.html").is_file():
        raise NotFoundError(
            f"{bundle} has no package index: {bundle / 'simple' / 'index.html'} does not exist",
            fix="pass the bundle directory built by `offline bundle build` (it holds simple/, "
            "wheels/ and locks/), unpacked if it came as split volumes",
        )
    host, port = _parse_bind(bind)
    try:
        return MirrorServer(bundle, host, port)
    except OSError as exc:
        raise _bind_error(bind, exc) from exc


def serve(
    bundle: Path,
    bind: str = DEFAULT_BIND,
    *,
    announce: Callable[[Mirror], None] | None = None,
) -> None:
    """Serve ``bundle``'s index on ``bind`` until interrupted (Ctrl-C stops it cleanly).

    Args:
        bundle: the bundle directory.
        bind: ``HOST:PORT`` to listen on; loopback unless LAN hosts must reach it.
        announce: called once the socket listens, with the URLs to give pip.
    """
    # The handler goes in before the socket listens, and a stop is clean wherever it lands: a
    # SIGTERM sent as soon as the port answers may arrive while the URLs are still printed.
    with _stopped_by_sigterm(), suppress(KeyboardInterrupt), create_server(bundle, bind) as server:
        if announce is not None:
            announce(server.mirror)
        server.serve_forever()


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does: it is what systemd and ``kill`` send, and a
    server started in the background by a script ignores SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parse_bind(bind: str) -> tuple[str, int]:
    found = _BIND.match(bind.strip())
    port = int(found["port"]) if found else -1
    if found is None or port > 65535:
        raise ConfigError(
            f"--bind {bind!r} is not HOST:PORT",
            fix=f"e.g. --bind {DEFAULT_BIND} (this host only) or --bind 0.0.0.0:8000 (the LAN)",
        )
    return found["v6"] or found["host"], port


def _bind_error(bind: str, exc: OSError) -> ConfigError | ResourceError:
    if exc.errno == errno.EADDRINUSE:
        return ResourceError(
            f"cannot serve on {bind}: the port is in use",
            fix="pick another port with --bind HOST:PORT, or stop what listens there "
            "(`ss -ltnp` shows it)",
        )
    if exc.errno == errno.EACCES:
        return ResourceError(
            f"cannot serve on {bind}: permission denied",
            fix="use a port above 1023, e.g. --bind 127.0.0.1:8000",
        )
    return ConfigError(
        f"cannot serve on {bind}: {exc.strerror or exc}",
        fix="bind to an address of this host (`ip -brief address` lists them), "
        f"e.g. --bind {DEFAULT_BIND}",
    )


def _normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


class _Handler(BaseHTTPRequestHandler):
    server: MirrorServer
    server_version = "offline-mirror"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse(self) -> None:
        self._plain(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _answer(self, *, body: bool) -> None:
        segments = self._segments()
        if segments is None:
            self._plain(HTTPStatus.NOT_FOUND)
            return
        redirect, target = self._route(segments)
        if redirect:
            self._plain(HTTPStatus.MOVED_PERMANENTLY, {"Location": target})
        elif target:
            self._file(self.server.root / target, body=body)
        else:
            self._plain(HTTPStatus.NOT_FOUND)

    def _segments(self) -> list[str] | None:
        """Decoded path segments, or None when any is not a plain name (``..``, ``a/b``...)."""
        path = urlsplit(self.path).path
        if not path.startswith("/"):
            return None
        segments = [unquote(s) for s in path[1:].split("/")]
        names = segments[:-1] if segments[-1] == "" else segments
        return segments if all(_SEGMENT.match(s) for s in names) else None

    def _route(self, segments: list[str]) -> tuple[bool, str]:
        """``(True, location)`` to redirect, ``(False, relative file)``, or ``(False, "")``."""
        match segments:
            case [""]:
                return True, "/simple/"
            case ["simple"]:
                return True, "/simple/"
            case ["simple", ""]:
                return False, "simple/index.html"
            case ["simple", name] | ["simple", name, "" | "index.html"]:
                canonical = _normalize(name)
                if canonical != name or segments[-1] != "":
                    return True, f"/simple/{quote(canonical)}/"
                return False, f"simple/{canonical}/index.html"
            case ["wheels" | "locks" as tree, name]:
                return False, f"{tree}/{name}"
        return False, ""

    def _file(self, path: Path, *, body: bool) -> None:
        if not path.is_file() or not path.resolve().is_relative_to(self.server.root):
            self._plain(HTTPStatus.NOT_FOUND)
            return
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", _TYPES.get(path.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(stat.st_size))
            self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
            self.end_headers()
            if body:
                try:
                    shutil.copyfileobj(handle, self.wfile, 1 << 20)
                except ConnectionError:
                    self.close_connection = True

    def _plain(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
        text = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)
