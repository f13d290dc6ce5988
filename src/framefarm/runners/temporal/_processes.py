"""A worker's job processes: a `concurrent.futures` executor whose processes run one job at a
time each, each on a pipe of its own, so a process that dies costs only its own job.

A render job whose frame runs out of time ends its process (`framefarm.job.JobWatch` calls
`os._exit`: a frame stuck in native code cannot be interrupted), and so does a sketch that calls
`sys.exit` or crashes the interpreter. In a `ProcessPoolExecutor` one such death breaks the whole
pool: every job in it fails, its other processes are terminated, and no job can be started on it
again. Here the dead process's job alone fails, with the error `on_death` makes of it (the job
log's "frame 14 took longer than the frame timeout", say), Temporal retries it as it retries a
crash, and a fresh process takes the dead one's place while the other jobs go on.

A render job in a process tells its slot when each frame finishes (`frame_done`); a slot whose
job has been silent for its frame timeout plus KILL_GRACE_SECONDS (native code holding the
interpreter, so the job's own watch cannot run) kills the process: the backstop the local runner
has too. Each process writes its temporary files in a scratch folder of its own, removed when it
ends.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

KILL_GRACE_SECONDS = 5.0
"""How long past its frame timeout a silent render job may go before its process is killed."""
_POLL_SECONDS = 1.0


class OnDeath(Protocol):
    """Makes the error a job fails with when its process ended before answering."""

    def __call__(self, args: tuple[Any, ...], *, pid: int, exitcode: int | None, frames: int,
                 stuck: bool, killed: str | None) -> BaseException:
        """`args`: the job's call; `frames`: the frames it reported done; `stuck`: killed by the
        frame-timeout backstop; `killed`: the reason given to `JobProcesses.kill` (None when
        the process died by itself or the backstop killed it)."""
        ...


# -- inside a job process -------------------------------------------------------------------------

_slot_state: Any = None
"""In a job process: its slot's shared [frames done, time of the last frame, frame timeout]."""


def job_began(frame_timeout: float) -> None:
    """The job in this process started; its frames may take `frame_timeout` seconds each (0:
    no limit, nor backstop)."""
    if _slot_state is not None:
        _slot_state[0], _slot_state[1], _slot_state[2] = 0, time.monotonic(), frame_timeout


def frame_done(done: int) -> None:
    """The job in this process finished its `done`-th frame."""
    if _slot_state is not None:
        _slot_state[0], _slot_state[1] = done, time.monotonic()


def _job_ended() -> None:
    if _slot_state is not None:
        _slot_state[2] = 0


def _job_process(conn: Connection, state: Any, scratch: str,
                 initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """A job process: run the calls it is sent, one at a time, until told to stop."""
    global _slot_state
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    _slot_state = state
    tempfile.tempdir = scratch  # partial segments go where the slot cleans up
    os.environ["TMPDIR"] = scratch
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            call = conn.recv()
        except (EOFError, OSError):
            return
        if call is None:
            return
        fn, args, kwargs = call
        try:
            reply: tuple[bool, object] = (True, fn(*args, **kwargs))
        except SystemExit as exc:  # the sketch called sys.exit: a crash, as os._exit would be
            os._exit(exc.code if isinstance(exc.code, int) and 0 < exc.code < 256 else 1)
        except Exception as exc:
            reply = (False, exc)
        except BaseException as exc:  # never raise KeyboardInterrupt into the worker's loop
            reply = (False, RuntimeError(f"the job was interrupted: {exc!r}"))
        _job_ended()
        try:
            conn.send(reply)
        except Exception as exc:  # a result or error that does not pickle
            conn.send((False, RuntimeError(f"the job's {'result' if reply[0] else 'error'} "
                                           f"cannot be sent to its worker: {exc}: "
                                           f"{reply[1]!r:.300}")))


# -- in the worker --------------------------------------------------------------------------------

_Call = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class JobProcesses(Executor):
    """`processes` job processes from `context`, each started with `initializer(*initargs)`;
    `submit` queues a call for the first free one."""

    def __init__(self, processes: int, *, context: BaseContext, on_death: OnDeath,
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        self.processes = processes
        self._context = context
        self._on_death = on_death
        self._initializer = initializer
        self._initargs = initargs
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._scratch = tempfile.mkdtemp(prefix="framefarm-jobs-")
        self._closed = False
        self.killed: str | None = None
        """The reason given to kill(), once it was called."""
        self._slots = [_Slot(self, number) for number in range(1, processes + 1)]
        for slot in self._slots:  # each starts its process now, not with its first job
            slot.thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run `fn(*args, **kwargs)` in the first free job process."""
        if self._closed:
            raise RuntimeError("the worker's job processes are stopping: no new job starts")
        future: Future[Any] = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the processes once their jobs in hand end (queued ones are dropped with
        `cancel_futures`), and remove their scratch folders."""
        self._closed = True
        if cancel_futures:
            self._drop_queued()
        for _ in self._slots:
            self._calls.put(None)
        if wait:
            for slot in self._slots:
                slot.thread.join()
            shutil.rmtree(self._scratch, ignore_errors=True)

    def kill(self, why: str = "") -> None:
        """Kill every job process now (their jobs fail at once; `why`, when given, is recorded
        as the reason) and start no job again."""
        self.killed = why
        self._closed = True
        self._drop_queued()
        for slot in self._slots:
            slot.kill()
        for _ in self._slots:
            self._calls.put(None)

    def pids(self) -> list[int]:
        """The job processes alive now."""
        return [s.process.pid for s in self._slots
                if s.process is not None and s.process.pid and s.process.is_alive()]

    def _drop_queued(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                call = self._calls.get_nowait()
                if call is None:
                    self._calls.put(None)  # a slot's stop: leave it for the slot
                    return
                call[0].cancel()


class _Slot:
    """One job process at a time, replaced when it dies, and the thread that feeds it."""

    def __init__(self, owner: JobProcesses, number: int) -> None:
        self.owner = owner
        self.number = number
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.scratch = ""
        self.state: Any = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name=f"framefarm-job-slot-{number}")

    def _serve(self) -> None:
        try:
            self._spawn()
            while True:
                call = self.owner._calls.get()
                if call is None:
                    return
                future, fn, args, kwargs = call
                if not future.set_running_or_notify_cancel():
                    continue
                if self.owner.killed is not None:
                    future.set_exception(RuntimeError("the worker's job processes were stopped"))
                    continue
                if self.process is None:
                    self._spawn()
                self._run(future, fn, args, kwargs)
        finally:
            self._end()

    def _spawn(self) -> None:
        context = self.owner._context
        with self._lock:
            if self.owner.killed is not None:
                return
            self.scratch = tempfile.mkdtemp(prefix=f"p{self.number}-", dir=self.owner._scratch)
            self.state = context.Array("d", 3, lock=False)
            self.conn, child = context.Pipe()
            self.process = context.Process(  # type: ignore[attr-defined]
                target=_job_process, name=f"framefarm-job-{self.number}", daemon=True,
                args=(child, self.state, self.scratch, self.owner._initializer,
                      self.owner._initargs))
            self.process.start()
            child.close()

    def _run(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> None:
        process, conn = self.process, self.conn
        if process is None or conn is None:  # killed before it could start
            future.set_exception(RuntimeError("the worker's job processes were stopped"))
            return
        self.state[0], self.state[1], self.state[2] = 0, time.monotonic(), 0
        try:
            conn.send((fn, args, kwargs))
        except (OSError, ValueError):
            pass  # it died already: found below
        except Exception as exc:  # the call does not pickle
            future.set_exception(exc)
            return
        stuck = False
        while True:
            ready = wait_for([conn, process.sentinel], timeout=_POLL_SECONDS)
            if conn in ready:
                try:
                    ok, value = conn.recv()
                except (EOFError, OSError):
                    break  # it died
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
                return
            if process.sentinel in ready:
                break
            timeout = float(self.state[2])
            if timeout and time.monotonic() - float(self.state[1]) > timeout + KILL_GRACE_SECONDS:
                stuck = True  # stuck in native code: its own watch could not stop it
                self.kill()
                break
        process.join(5)
        killed = None if stuck else self.owner.killed
        try:
            error = self.owner._on_death(args, pid=process.pid or 0, exitcode=process.exitcode,
                                         frames=int(self.state[0]), stuck=stuck, killed=killed)
        except Exception as exc:  # the report failed: the job still failed
            error = RuntimeError(f"its job process, pid {process.pid}, ended "
                                 f"(exit code {process.exitcode}); reporting it failed: {exc}")
        future.set_exception(error)
        self._end()
        if not self.owner._closed:
            self._spawn()  # warm for the next job

    def kill(self) -> None:
        with self._lock:
            if self.process is not None and self.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid or 0, signal.SIGKILL)

    def _end(self) -> None:
        """Stop this slot's process (asked, then killed) and remove its scratch folder."""
        with self._lock:
            process, conn, self.process, self.conn = self.process, self.conn, None, None
        if process is not None and conn is not None:
            if process.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    conn.send(None)
                process.join(5)
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid or 0, signal.SIGKILL)
                process.join(5)
            conn.close()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = ""


def find(args: Iterable[Any], kind: type[Any]) -> Any:
    """The first of a call's arguments that is a `kind`, or None."""
    return next((a for a in args if isinstance(a, kind)), None)
