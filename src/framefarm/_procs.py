"""Child processes that end with their parent, and how a process ended, in words."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time

_PR_SET_PDEATHSIG = 1


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
