"""Child processes that end with their parent, children started clean (from a forkserver of
this process's own), and how a process ended, in words.

A process that has threads must not fork: the child gets a copy of every lock, condition and
object those threads were using, but not the threads. Python's threads are not the only ones,
and `threading` sees none of the others (x264's, a GL driver's, a BLAS pool's). A render job's
drawer, forked while the job's failed chunk's encoder waited to be collected, ran that
collection itself and hung in x264_encoder_close (pthread_cond_destroy) waiting for x264
threads it never had. So children that must start quickly from such a process start from a
forkserver, which forks each child from its single thread: a fresh interpreter that imported
CLEAN_PRELOAD once, or a fork of a process made while it had no thread to trip on.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import select
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.context import ForkServerProcess, set_spawning_popen
from multiprocessing.process import BaseProcess
from typing import Any

_PR_SET_PDEATHSIG = 1
CLEAN_PRELOAD = ("framefarm.steps._drawing", "numpy", "numpy.random", "av", "PIL.Image")
"""What this process's forkserver imports once, before forking any child: a drawer starts in
milliseconds with them loaded (a fresh interpreter takes 0.3 s to import them)."""
_SOCKET_PATH_MAX = 107
"""The longest path of a Unix socket (Linux): the forkserver listens on one."""


def die_with(pid: int) -> None:
    """End this process as soon as process `pid` ends (a thread watches it).

    A process forked from a forkserver outlives a parent that was killed (SIGKILL, the OOM
    killer), and one that ignores the signals meant for its parent would linger, a job
    finishing for nobody.
    """

    def watch() -> None:
        try:
            ended = os.pidfd_open(pid)  # Linux 5.3+: readable when the process ends
        except (AttributeError, OSError):
            while process_alive(pid):
                time.sleep(1.0)
        else:
            select.select([ended], [], [])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="framefarm-parent-watch").start()


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the thread that started it ends (Linux);
    nothing elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def process_alive(pid: int) -> bool:
    """True when process `pid` exists on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def how_it_ended(exitcode: int | None) -> str:
    """`killed by SIGKILL`, `exited with code 3`: a process's end as multiprocessing reports it."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = {"SIGKILL": " (killed, or out of memory)", "SIGSEGV": " (a crash in native code)",
               "SIGABRT": " (aborted)", "SIGBUS": " (a crash in native code)"}.get(name, "")
        return f"was killed by {name}{why}"
    return f"exited with code {exitcode}"


def native_threads() -> frozenset[str]:
    """The ids of this process's threads, native ones included (Linux: /proc/self/task);
    empty where they cannot be listed."""
    try:
        return frozenset(os.listdir("/proc/self/task"))
    except OSError:
        return frozenset()


class PassedFd:
    """A file descriptor for a child started by `start_clean`: the child receives its own copy,
    as an int, through the forkserver (SCM_RIGHTS)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[[Any], int], tuple[Any]]:
        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(dup: Any) -> int:
    return int(dup.detach())


class CleanChild:
    """A child started from this process's forkserver. The forkserver is its parent: its exit
    code comes through `sentinel`, readable once the child ended (or the forkserver died)."""

    def __init__(self, popen: popen_forkserver.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.sentinel = popen.sentinel

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` s for the child to end; its exit code (-N: signal N)."""
        return self._popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the child, unless it ended."""
        self._popen.kill()

    def close(self) -> None:
        """Let go of the sentinel (the child is left alone: stop it first)."""
        self._popen.close()


def start_forkserver() -> None:
    """Start this process's forkserver now, so the first `start_clean` does not wait the
    0.3 s it takes to import CLEAN_PRELOAD (it imports them while this process goes on)."""
    _forkserver().ensure_running()


def fork_forkserver() -> None:
    """Make this process's forkserver a fork of this process, now: a fork costs milliseconds
    where a fresh interpreter's imports take 0.3 s. The children this process forks afterwards
    (a local runner's workers) start their clean children (drawers) from it too.

    Only for a process that may fork now: one with no thread that a child could trip on (see
    LocalRunner._context); the forkserver is as clean as this process is at this moment. No
    effect when this process has a forkserver already.
    """
    global _server
    with _server_lock:
        if _server is not None and _server.owner == os.getpid():
            return
        _short_socket_folder()
        _server = _Server(shared=True)
        _server.fork()


def start_clean(target: Callable[..., object], args: tuple[Any, ...], *, name: str) -> CleanChild:
    """Run `target(*args)` in a child forked by this process's forkserver, never by this
    process: it inherits none of this process's threads, locks or objects, only `args` (sent
    pickled: multiprocessing's Connections and `PassedFd`s arrive as the child's own). The
    target must be importable (not in __main__).

    Allowed in a daemonic multiprocessing worker too (a job runs in one), as the child is the
    forkserver's, not this process's; it is not one of `multiprocessing.active_children()`, so
    the caller waits for it (`CleanChild.wait`) and ends it.
    """
    process = ForkServerProcess(target=target, args=args, name=name, daemon=True)
    return CleanChild(_CleanPopen(process))


class _Server(forkserver.ForkServer):
    """multiprocessing's forkserver, started by exec (a fresh interpreter that imports
    CLEAN_PRELOAD) or as a fork (`fork`); a `shared` one serves the processes its owner
    forks as well, for as long as it lives."""

    def __init__(self, *, shared: bool = False) -> None:
        super().__init__()
        self.owner = os.getpid()
        self.shared = shared
        self.set_forkserver_preload(list(CLEAN_PRELOAD))

    def fork(self) -> None:
        """Start the server as a fork of this process (multiprocessing's own server loop)."""
        with socket.socket(socket.AF_UNIX) as listener:
            # As multiprocessing names its own (bind fails rather than reuse a name).
            address = tempfile.mktemp(prefix="listener-", dir=util.get_temp_dir())
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()  # the server ends when every copy of alive_w is closed
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(alive_w)
                    forkserver.main(listener.fileno(), alive_r, [])
                finally:
                    os._exit(0)
            os.close(alive_r)
        self._forkserver_address = address
        self._forkserver_alive_fd = alive_w
        self._forkserver_pid = pid

    def ensure_running(self) -> None:
        if os.getpid() != self.owner:  # a fork of the owner, sharing its server
            if process_alive(self._forkserver_pid):
                return
            self.owner, self.shared = os.getpid(), False  # it is gone: one of our own, then
            self._forkserver_address = self._forkserver_pid = None  # type: ignore[assignment]
            with contextlib.suppress(OSError):
                os.close(self._forkserver_alive_fd)
            self._forkserver_alive_fd = None  # type: ignore[assignment]
        super().ensure_running()


_server: _Server | None = None
"""This process's forkserver: its own, or a shared one of the process that forked it."""
_server_lock = threading.Lock()


def _forkserver() -> _Server:
    global _server
    with _server_lock:
        if _server is None or (_server.owner != os.getpid() and not _server.shared):
            _short_socket_folder()
            _server = _Server()
        return _server


def _short_socket_folder() -> None:
    """Have multiprocessing make its temporary folder, where the forkserver's socket goes, with
    a path short enough for a socket: a worker's scratch folder (its TMPDIR) named after a long
    run id is not (multiprocessing keeps the first folder it made for the process's life)."""
    socket_path = len(tempfile.gettempdir()) + len("/pymp-12345678/listener-12345678")
    if socket_path <= _SOCKET_PATH_MAX or not os.path.isdir("/tmp"):
        return
    before = tempfile.tempdir
    tempfile.tempdir = "/tmp"
    try:
        util.get_temp_dir()
    finally:
        tempfile.tempdir = before


class _CleanPopen(popen_forkserver.Popen):
    """multiprocessing's forkserver launch, through this process's own forkserver (see
    _forkserver) and without re-running the parent's __main__ in the child: the children's
    targets live in framefarm, and a console script's __main__ only costs import time."""

    def _launch(self, process_obj: BaseProcess) -> None:
        prep_data = spawn.get_preparation_data(process_obj.name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = _forkserver().connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        # The data pipe's write end, kept open: the child's sign that its parent lives.
        parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, _close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
