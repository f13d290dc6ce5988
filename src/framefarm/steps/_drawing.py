"""Drawing processes: a render job given several CPUs draws its frames in that many processes
while its own process encodes them, in order, into one segment.

This is how a segment stays long (every segment restarts x264 with a key frame, which costs
size: see steps/_sizing.py) while every core works on it: the sketch runs `count` wide, and
the encoder runs beside it with its own threads.

The drawers start from a forkserver of the job's own (framefarm._procs.start_clean), never as
forks of the job: a job has threads (its job-log watch, Temporal's heartbeats, x264's threads
of an encoder not yet collected, whatever native threads the sketch started), and a fork copies
their locks without them — a drawer forked beside the previous chunk's encoder hung in
x264_encoder_close when its garbage collector freed that encoder. So each drawer opens the
sketch itself (its setup() runs once per drawer, as once per worker process) and starts in
milliseconds all the same: the forkserver imported NumPy, PyAV and framefarm once.

Each drawer owns a few frame slots in memory shared with the job (a memfd, nameless: nothing to
clean up when a process is killed). The job hands each free slot the next frame to draw, so a
drawer with quick frames draws more of them (frames are taken, not dealt), converts it to the
encoder's Y'CbCr 4:2:0 and says which slot holds it; the job encodes frames in order and gives
the slot back. A drawer ends with the job (a watch on its pid, and PDEATHSIG with its
forkserver), and a job whose drawer dies fails with the frame it was drawing, exit 1, for the
runner to retry. A sketch that fails to load or set up in a drawer fails the job as it would in
the job's own process (exit 2).
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import NoReturn

import av
import numpy as np

from framefarm._frames import png_bytes
from framefarm._procs import PassedFd, die_with, die_with_parent, how_it_ended, start_clean
from framefarm.errors import FramefarmError
from framefarm.sketch import FrameSource, load_sketch
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


@dataclass(frozen=True, kw_only=True)
class DrawerSketch:
    """What a drawer needs to open the sketch itself: where it is, and the video it draws for."""

    location: str
    """As the plan gives it: a storage URL, `module:attr` or a path."""
    local_file: str = ""
    """The sketch's local copy, when `location` is a storage URL (the job fetched it)."""
    display_name: str = ""
    width: int
    height: int
    rate: Fraction
    total_frames: int

    def open(self) -> FrameSource:
        """The sketch loaded and set up in this process, as the job's own process would."""
        sketch = load_sketch(self.location, storage_loader=lambda _url: Path(self.local_file),
                             display_name=self.display_name or None)
        return FrameSource(sketch, width=self.width, height=self.height, fps=self.rate,
                           total_frames=self.total_frames)


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
    """One drawing process (from the job's forkserver), its pipe and its slots."""

    def __init__(self, sketch: DrawerSketch, number: int, frame_bytes: int,
                 keep: tuple[str, str] | None) -> None:
        self.frame_bytes = frame_bytes
        size = SLOTS_PER_DRAWER * frame_bytes
        slots = os.memfd_create(f"framefarm-drawer-{number}-slots")
        try:
            os.ftruncate(slots, size)
            self.memory = mmap.mmap(slots, size)  # shared: the drawer maps the same memfd
            self.conn, child = multiprocessing.Pipe()
            try:
                self.process = start_clean(
                    _drawer_main, (child, PassedFd(slots), sketch, frame_bytes, keep, os.getpid()),
                    name=f"framefarm-drawer-{number}")
            except BaseException:
                self.conn.close()
                self.memory.close()
                raise
            finally:
                child.close()
        finally:
            os.close(slots)
        self.pid = self.process.pid
        self.exitcode: int | None = None
        self.ended = self.process.sentinel  # readable once the drawer has ended
        self.free = deque(range(SLOTS_PER_DRAWER))
        self.drawing: dict[int, int] = {}
        """Frames sent and not yet delivered, by slot."""

    def slot(self, slot: int) -> np.ndarray:
        start = slot * self.frame_bytes
        return np.frombuffer(self.memory, np.uint8, self.frame_bytes, start)

    def reap(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the drawer to end; its exit code (-N: signal N)."""
        if self.exitcode is None:
            self.exitcode = self.process.wait(timeout)
        return self.exitcode

    def ask_to_stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)

    def stop(self) -> None:
        """Ask, wait up to 2 s, then kill; let go of its pipe, sentinel and slots."""
        self.ask_to_stop()
        if self.reap(2) is None:
            self.process.kill()
            self.reap(2)
        self.conn.close()
        self.process.close()
        with contextlib.suppress(BufferError):  # a view may outlive us; the mapping goes with it
            self.memory.close()


class Drawers:
    """`count` processes drawing frames of `sketch` for this process to encode."""

    def __init__(self, sketch: DrawerSketch, count: int, *,
                 keep: tuple[str, str] | None = None) -> None:
        """`keep`: (storage URL, run id) to store each frame's PNG there (frames kept)."""
        self._shape = (sketch.height * 3 // 2, sketch.width)
        frame_bytes = self._shape[0] * self._shape[1]
        self._drawers: list[_Drawer] = []
        try:
            for n in range(1, count + 1):
                self._drawers.append(_Drawer(sketch, n, frame_bytes, keep))
        except BaseException:  # a start refused (no memory, a process limit): none is left
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
        """Stop every drawer (each ends with this process anyway): all are told at once, then
        each is waited for."""
        for drawer in self._drawers:
            drawer.ask_to_stop()
        for drawer in self._drawers:
            drawer.stop()
        self._drawers = []


def _drawer_main(conn: Connection, slots: int, sketch: DrawerSketch, frame_bytes: int,
                 keep: tuple[str, str] | None, parent: int) -> NoReturn:
    """A drawer: open the sketch, then draw the frame each message names into its slot, until
    told to stop. A sketch that cannot be opened answers every frame with its error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()
    die_with(parent)
    with contextlib.suppress(OSError):
        os.nice(DRAWER_NICE)
    memory = mmap.mmap(slots, SLOTS_PER_DRAWER * frame_bytes)
    os.close(slots)
    clock = time.perf_counter
    storage: Storage | None = None
    source: FrameSource | None = None
    failed: Exception | None = None
    try:
        source = sketch.open()
    except Exception as exc:  # the sketch's error (UserError, SketchError): the job's to report
        failed = _portable(exc)
    code = 0
    try:
        while (message := conn.recv()) is not None:
            frame, slot = message
            began = clock()
            try:
                if source is None:
                    raise failed or FramefarmError("the sketch did not open")
                pixels = source.frame(frame)
                drawn = clock()
                yuv = to_yuv(pixels).to_ndarray()
                start = slot * frame_bytes
                np.frombuffer(memory, np.uint8, frame_bytes, start)[:] = yuv.reshape(-1)
                converted = clock()
                if keep is not None:
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
