"""`framefarm ui`: serve the web view over the storage and job log the other commands use, on
127.0.0.1 unless told otherwise, until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import ipaddress
import secrets
import socket
import sys
import threading
import webbrowser

from framefarm import config
from framefarm.errors import MissingExtraError, UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_LOOPBACK_NAMES = ("localhost",)


def check_extra() -> None:
    """A MissingExtraError (one line, the pip command) without Starlette or uvicorn."""
    for module in ("starlette", "uvicorn"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtraError("framefarm ui", "ui") from None


def is_loopback(host: str) -> bool:
    """True when `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a UserError naming the address and the fix."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"--host {host!r} is no address of this machine ({exc.strerror}): use "
                        f"an IP address such as {DEFAULT_HOST}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use (another framefarm ui?): choose "
                            "another with --port, or --port 0 for any free one") from None
        if exc.errno == errno.EACCES:
            raise UserError(f"port {port} on {host} needs privileges this user lacks: choose a "
                            "port above 1023 with --port") from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}): use --host "
                        f"{DEFAULT_HOST} or another address of this machine") from None
    sock.setblocking(False)
    return sock


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host headers a loopback server answers (its own names); None (any) when bound to a
    wider address, which the user chose knowingly."""
    if not is_loopback(host):
        return None
    names = {host.lower(), "127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{name}:{port}" for name in names)


def main(args: argparse.Namespace) -> int:
    """Run `framefarm ui`; the exit code (0 once stopped with Ctrl-C)."""
    check_extra()
    from framefarm.joblog import url_reach
    from framefarm.storage import open_storage

    storage_url = str(config.resolve(args.storage, config.STORAGE, config.default_storage_url()))
    joblog_url = str(config.resolve(args.joblog, config.JOBLOG, config.default_joblog_url()))
    open_storage(storage_url)  # a bad URL or a missing extra: one line now, not per request
    url_reach(joblog_url)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    import uvicorn

    from framefarm.ui.app import Settings, create_app

    token = secrets.token_urlsafe(24)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    app = create_app(Settings(storage_url=storage_url, joblog_url=joblog_url, token=token,
                              hosts=allowed_hosts(shown, port)))
    url = f"http://{shown}:{port}/"
    if not is_loopback(args.host):
        print(f"framefarm ui: warning: listening on {args.host}, not only this machine: anyone "
              "who can reach it sees the runs (actions still need the token)", file=sys.stderr)
    print(f"framefarm ui: {url}  (storage {storage_url}, job log {joblog_url})")
    print(f"framefarm ui: token {token} (the page has it; other clients send it as "
          "X-Framefarm-Token)", flush=True)
    if args.open:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=2, lifespan="off"))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops gracefully, then re-raises it
        server.run(sockets=[sock])
    print("framefarm ui: stopped", file=sys.stderr)
    return 0
