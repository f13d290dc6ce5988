"""Drawing processes: a render job given several CPUs draws its frames in that many processes
while its own process encodes them, in order, into one segment.

This is how a segment stays long (every segment restarts x264 with a key frame, which costs
size: see steps/_sizing.py) while every core works on it: the sketch runs `count` wide, and
the encoder runs beside it with its own threads.

The drawers are forked from the job's process once its sketch is set up, so they start drawing
at once with the sketch's state already built (setup() ran once, in the job). Each drawer owns
a few frame slots in memory shared with the job (an anonymous shared mapping made before the
fork: no names, nothing to clean up when a process is killed). The job hands each free slot the
next frame to draw, so a drawer with quick frames draws more of them (frames are taken, not
dealt), converts it to the encoder's Y'CbCr 4:2:0 and says which slot holds it; the job encodes
frames in order and gives the slot back. A drawer ends with the job (PDEATHSIG and a watch on
its parent), and a job whose drawer dies fails with the frame it was drawing, exit 1, for the
runner to retry.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import signal
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from typing import NoReturn

import av
import numpy as np

from framefarm._frames import png_bytes
from framefarm._procs import die_with, die_with_parent, how_it_ended
from framefarm.errors import FramefarmError
from framefarm.sketch import FrameSource
from framefarm.steps._keys import frame_key
from framefarm.storage import Storage, open_storage
from framefarm.video import to_yuv

SLOTS_PER_DRAWER = 3
"""Frames a drawer may have drawn ahead of the encoder: enough that one slow frame does not
leave the other drawers waiting for their slots back."""
DRAWER_NICE = 10
"""Drawers yield the CPU to the encoder. x264's threads encode frames in lock-step (each waits
for rows of the frame before it), so one preempted by a drawer stalls the others: at equal
priority 2 drawers beside a 2-thread encoder on 2 cores took 8.1-8.5 s for plasma's 240 frames,
at nice 10 5.8-5.9 s. The drawers still get every cycle the encoder leaves: it waits for them
as soon as its frames run out."""


class DrawerLost(FramefarmError):
    """A drawing process ended before it delivered its frame (a signal, the OOM killer)."""


@dataclass(frozen=True)
class Drawn:
    """One frame, drawn and converted: ready for the encoder."""

    frame: int
    image: av.VideoFrame
    draw_seconds: float
    """The sketch's time for this frame, in its drawer."""
    convert_seconds: float


class _Drawer:
    """One drawing process (forked directly: a job may itself run in a daemonic worker, which
    multiprocessing does not let have children), its pipe and its slots."""

    def __init__(self, source: FrameSource, number: int, frame_bytes: int,
                 keep: tuple[str, str] | None) -> None:
        self.frame_bytes = frame_bytes
        self.memory = mmap.mmap(-1, SLOTS_PER_DRAWER * frame_bytes)  # shared with the fork
        self.conn, child = multiprocessing.Pipe()
        parent = os.getpid()
        with warnings.catch_warnings():  # Python 3.12+ frowns on forking beside threads: the
            warnings.simplefilter("ignore", DeprecationWarning)  # child only draws (see below)
            pid = os.fork()
        if pid == 0:  # the drawer: it never returns from here
            try:
                self.conn.close()
                _drawer_main(child, self.memory, source, frame_bytes, keep, parent)
            finally:
                os._exit(1)
        child.close()
        self.pid = pid
        self.exitcode: int | None = None
        self.ended = os.pidfd_open(pid)  # readable once the drawer has ended
        self.free = deque(range(SLOTS_PER_DRAWER))
        self.drawing: dict[int, int] = {}
        """Frames sent and not yet delivered, by slot."""

    def slot(self, slot: int) -> np.ndarray:
        start = slot * self.frame_bytes
        return np.frombuffer(self.memory, np.uint8, self.frame_bytes, start)

    def reap(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the drawer to end; its exit code (-N: signal N)."""
        if self.exitcode is None and wait_for([self.ended], timeout):
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
                self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        if self.reap(2) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.reap(2)
        self.conn.close()
        os.close(self.ended)
        with contextlib.suppress(BufferError):  # a view may outlive us; the mapping goes with it
            self.memory.close()


class Drawers:
    """`count` processes drawing frames of `source` for this process to encode."""

    def __init__(self, source: FrameSource, count: int, *,
                 keep: tuple[str, str] | None = None) -> None:
        """`keep`: (storage URL, run id) to store each frame's PNG there (frames kept)."""
        self._shape = (source.height * 3 // 2, source.width)
        frame_bytes = self._shape[0] * self._shape[1]
        self._drawers: list[_Drawer] = []
        try:
            for n in range(1, count + 1):
                self._drawers.append(_Drawer(source, n, frame_bytes, keep))
        except BaseException:  # a fork refused (no memory, a process limit): none is left
            self.close()
            raise

    def draw(self, frames: range) -> Iterator[Drawn]:
        """Frames `frames`, drawn across the drawers, in order. Leaving early (an error, a
        generator closed) stops the drawers: frames still in flight cannot be taken back."""
        done = False
        try:
            yield from self._draw(frames)
            done = True
        finally:
            if not done:
                self.close()

    def _draw(self, frames: range) -> Iterator[Drawn]:
        waiting = deque(frames)
        ready: dict[int, tuple[_Drawer, int, float, float]] = {}
        by_conn = {d.conn: d for d in self._drawers}
        by_sentinel = {d.ended: d for d in self._drawers}
        for frame in frames:
            while frame not in ready:
                self._hand_out(waiting)
                for handle in wait_for([*by_conn, *by_sentinel]):
                    if handle in by_conn:
                        self._receive(by_conn[handle], ready)
                    else:
                        self._lost(by_sentinel[handle])  # type: ignore[index]
            drawer, slot, draw_seconds, convert_seconds = ready.pop(frame)
            image = av.VideoFrame.from_ndarray(drawer.slot(slot).reshape(self._shape),
                                               format="yuv420p")  # a copy: the slot is free
            drawer.free.append(slot)
            self._hand_out(waiting)
            yield Drawn(frame, image, draw_seconds, convert_seconds)

    def _hand_out(self, waiting: deque[int]) -> None:
        """Give every free slot the next frame, most free slots first."""
        while waiting:
            drawer = max(self._drawers, key=lambda d: len(d.free))
            if not drawer.free:
                return
            frame, slot = waiting.popleft(), drawer.free.popleft()
            drawer.drawing[slot] = frame
            drawer.conn.send((frame, slot))

    def _receive(self, drawer: _Drawer, ready: dict[int, tuple[_Drawer, int, float, float]]) -> None:
        try:
            message = drawer.conn.recv()
        except (EOFError, OSError):
            self._lost(drawer)
        if message[0] == "error":
            raise message[1]
        _, slot, draw_seconds, convert_seconds = message
        ready[drawer.drawing.pop(slot)] = (drawer, slot, draw_seconds, convert_seconds)

    def _lost(self, drawer: _Drawer) -> NoReturn:
        exitcode = drawer.reap(1)
        frames = sorted(drawer.drawing.values())
        on = f" while drawing frame {frames[0]}" if frames else ""
        raise DrawerLost(f"its drawing process, pid {drawer.pid}, {how_it_ended(exitcode)}{on}")

    def close(self) -> None:
        """Stop every drawer (each ends with this process anyway)."""
        for drawer in self._drawers:
            drawer.stop()
        self._drawers = []


def _drawer_main(conn: Connection, memory: mmap.mmap, source: FrameSource, frame_bytes: int,
                 keep: tuple[str, str] | None, parent: int) -> NoReturn:
    """A drawer: draw the frame each message names into its slot, until told to stop.

    Forked from a job that may run threads (its job-log watch, tracing's exporter); this
    process uses none of what they hold (the job log, spans): it only draws, converts and
    writes into its slots, and ends with os._exit, so nothing inherited is flushed or closed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()
    die_with(parent)
    with contextlib.suppress(OSError):
        os.nice(DRAWER_NICE)
    clock = time.perf_counter
    storage: Storage | None = None
    code = 0
    try:
        while (message := conn.recv()) is not None:
            frame, slot = message
            began = clock()
            try:
                pixels = source.frame(frame)
                drawn = clock()
                yuv = to_yuv(pixels).to_ndarray()
                start = slot * frame_bytes
                np.frombuffer(memory, np.uint8, frame_bytes, start)[:] = yuv.reshape(-1)
                converted = clock()
                if keep is not None:  # its own client: one inherited through a fork is not safe
                    storage = storage or open_storage(keep[0])
                    storage.put_bytes(frame_key(keep[1], frame), png_bytes(pixels))
            except Exception as exc:  # the sketch's error (SketchError) or a bad frame
                conn.send(("error", _portable(exc)))
                continue
            conn.send(("done", slot, drawn - began, converted - drawn))
    except (EOFError, OSError, KeyboardInterrupt):
        code = 1
    finally:
        os._exit(code)


def _portable(exc: Exception) -> Exception:
    """`exc` if it survives a pipe, else a plain error carrying its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return FramefarmError(f"{type(exc).__name__}: {exc}")
    return exc
