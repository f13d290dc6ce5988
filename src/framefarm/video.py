"""Video with PyAV (FFmpeg + libx264): encode frames into a segment, join segments without
re-encoding, and probe a finished video.

Colour: frames are converted RGB -> Y'CbCr with the BT.709 matrix, limited range, and the stream
is tagged BT.709 so players show the colours the sketch drew.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from framefarm.model import VideoSettings

_BT709 = 1  # ITU-T H.273 code for BT.709 primaries, transfer and matrix

KEYINT = 250
"""x264's default longest run of frames between key frames (its `keyint`)."""


def segment_keyint(frames: int) -> int:
    """The key-frame interval for the segments of a plan whose chunks have `frames` frames.

    A segment starts with a key frame, so a segment of KEYINT frames or more gets as many key
    frames as one long encode would give its frames, never more: floor(frames / KEYINT), evenly
    spaced. Shorter segments keep KEYINT itself: x264 writes a different sequence header for
    an interval shorter than its B-frame run, and segments are joined under the first one's.
    """
    if frames < KEYINT:
        return KEYINT
    groups = frames // KEYINT
    return -(-frames // groups)


def to_yuv(pixels: np.ndarray, *, threads: int | None = None) -> av.VideoFrame:
    """A uint8 HxWx3 (RGB) or HxWx4 (RGBA, alpha ignored) array as the encoder's frame:
    Y'CbCr 4:2:0, BT.709 matrix, limited range."""
    fmt = "rgba" if pixels.shape[2] == 4 else "rgb24"
    frame = av.VideoFrame.from_ndarray(pixels, format=fmt)
    return frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                          dst_color_range=ColorRange.MPEG, threads=threads)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, read back from the file itself."""

    frames: int
    width: int
    height: int
    fps: Fraction
    codec: str
    pix_fmt: str
    duration: float


def _configure_x264(ctx: av.VideoCodecContext, video: VideoSettings, *, threads: int,
                    keyint: int) -> None:
    """Every libx264 encoder framefarm opens: the run's size, quality and colours."""
    ctx.width = video.width
    ctx.height = video.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = 1 / video.rate
    ctx.framerate = video.rate
    ctx.color_primaries = _BT709
    ctx.color_trc = _BT709
    ctx.colorspace = _BT709
    ctx.color_range = int(ColorRange.MPEG)
    ctx.thread_count = threads
    # PyAV's default is SLICE, which makes x264 cut every frame into slices, one per thread:
    # 7.7% larger on examples/tracker.py with 2 threads. Frame threads (x264's own default)
    # cost 0.01%.
    ctx.thread_type = "FRAME"
    if keyint:
        ctx.gop_size = keyint
    ctx.options = {"crf": str(video.crf), "preset": video.preset}
    if threads:
        ctx.options = {**ctx.options, "threads": str(threads)}


def key_frame_cost(first: np.ndarray, second: np.ndarray, *, video: VideoSettings) -> tuple[int, int]:
    """Encode two consecutive frames at the run's settings, one thread, in memory: the bytes of
    the first (a key frame) and of the second (predicted from it)."""
    ctx = av.CodecContext.create("libx264", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    _configure_x264(ctx, video, threads=1, keyint=0)
    sizes: list[int] = []
    for pts, pixels in enumerate((first, second)):
        frame = to_yuv(pixels, threads=1)
        frame.pts = pts
        sizes += [packet.size for packet in ctx.encode(frame)]
    sizes += [packet.size for packet in ctx.encode(None)]
    if len(sizes) != 2:
        raise RuntimeError(f"x264 made {len(sizes)} packets of 2 frames")
    return sizes[0], sizes[1]


class SegmentWriter:
    """Encode frames one at a time into an H.264 MP4 segment whose first frame is a key frame.

    Frames are streamed to the encoder as they arrive; nothing is held back, so memory does not
    grow with the number of frames.
    """

    def __init__(self, path: str | Path, *, video: VideoSettings, threads: int = 0,
                 faststart: bool = False, keyint: int = 0) -> None:
        """`threads`: how many threads x264 and the colour conversion may use (0: their choice);
        `keyint`: the most frames between key frames (0: x264's KEYINT)."""
        self.path = Path(path)
        self.video = video
        options = {"movflags": "+faststart"} if faststart else {}
        self._container = av.open(str(self.path), mode="w", format="mp4", options=options)
        stream = self._container.add_stream("libx264", rate=video.rate)
        stream.time_base = 1 / video.rate
        _configure_x264(stream.codec_context, video, threads=threads, keyint=keyint)
        self._stream = stream
        self._frame_time_base = 1 / video.rate
        self._threads = threads
        self._count = 0

    @property
    def frames_written(self) -> int:
        """How many frames went into the encoder so far."""
        return self._count

    def write(self, pixels: np.ndarray) -> None:
        """Encode one frame: a uint8 HxWx3 (RGB) or HxWx4 (RGBA, alpha ignored) array."""
        self.write_yuv(to_yuv(pixels, threads=self._threads or None))

    def write_yuv(self, frame: av.VideoFrame) -> None:
        """Encode one frame already converted by `to_yuv`."""
        frame.pts = self._count
        frame.time_base = self._frame_time_base
        self._count += 1
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is not None:
            try:
                self._container.mux(self._stream.encode(None))
            finally:
                self._container.close()
                self._container = None  # type: ignore[assignment]

    def abort(self) -> None:
        """Close without flushing (after an error); the file is not a valid segment."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None  # type: ignore[assignment]

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# Opening a file makes FFmpeg decode its first frames to fill in stream facts (pixel format)
# that copying packets never needs: about 4 ms per 720p segment, twice per segment when joining.
# Skipping the decode of non-key frames skips that probe; packets and timestamps are the demuxer's
# and do not change.
_COPY_ONLY = {"skip_frame": "nonkey"}


def _open_for_copy(path: Path) -> av.container.InputContainer:
    """Open a segment to read its packets, not to decode them."""
    return av.open(str(path), options=_COPY_ONLY)


def _reorder_delay(path: Path, frame_duration: Fraction) -> int:
    """How many frames a segment's decode timestamps start before its first shown frame."""
    with _open_for_copy(path) as src:
        for packet in src.demux(video=0):
            if packet.dts is not None and packet.time_base is not None:
                return max(0, round(-packet.dts * packet.time_base / frame_duration))
    return 0


def concat_segments(segments: Sequence[tuple[Path, int]], dest: str | Path, *,
                    rate: Fraction) -> None:
    """Join H.264 segments into one MP4 without re-encoding.

    `segments` pairs each segment's file with the index of its first frame in the video; each
    segment's presentation timestamps are shifted by that many frame durations, so order and
    timing come from the plan, not from file names. Decode timestamps are renumbered one frame
    apart with the largest reordering delay of any segment (x264 uses less B-frame delay in very
    short segments), which keeps them rising, never after their frame is shown, and the frame
    rate readable from the file. Every segment must carry the first one's sequence header (its
    settings), under which the joined video is decoded; one that does not is a ValueError.
    """
    if not segments:
        raise ValueError("no segments to join")
    frame_duration = 1 / rate
    delay = max(_reorder_delay(path, frame_duration) for path, _ in segments)
    dest = Path(dest)
    with av.open(str(dest), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        out_stream = None
        decoded = 0  # packets joined so far
        for path, first_frame in segments:
            with _open_for_copy(path) as src:
                in_stream = src.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream)
                    header = in_stream.codec_context.extradata
                elif in_stream.codec_context.extradata != header:
                    raise ValueError(f"segment {path.name} was encoded with other settings than "
                                     f"the first: its frames would not decode in the joined video")
                tb = in_stream.time_base
                assert tb is not None
                step = frame_duration / tb
                shift = round(first_frame * step)
                for packet in src.demux(in_stream):
                    if packet.dts is None:  # the demuxer's empty flush packet
                        continue
                    packet.pts = (packet.pts or 0) + shift
                    packet.dts = round((decoded - delay) * step)
                    decoded += 1
                    packet.stream = out_stream
                    out.mux(packet)


def probe(path: str | Path, *, decode: bool = True) -> VideoInfo:
    """Read a video's frame count, size, rate and codec; with `decode`, count decoded frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or Fraction(0)
        if decode:
            stream.thread_type = "AUTO"
            frames = sum(1 for _ in container.decode(stream))
        else:
            frames = sum(1 for p in container.demux(stream) if p.size)
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        return VideoInfo(frames=frames, width=stream.codec_context.width,
                         height=stream.codec_context.height, fps=Fraction(rate),
                         codec=stream.codec_context.name, pix_fmt=stream.codec_context.pix_fmt or "",
                         duration=duration)


@dataclass(frozen=True)
class VideoCheck:
    """What `inspect_video` found: the video's facts and how its frames line up."""

    info: VideoInfo
    positions: list[int]
    """Each packet's frame index (its timestamp in frame durations), in file order."""
    key_frames: int
    key_frames_decoded: int


def inspect_video(path: str | Path, *, rate: Fraction) -> VideoCheck:
    """Read every packet's timestamp and decode every key frame (one starts each segment).

    This proves each frame is in the file exactly once, in its place and time, and that each
    segment decodes at the right size, for a fraction of a full decode's cost: only the
    independently coded key frames are decoded; the frames between them are x264's own output,
    joined without touching a byte.
    """
    positions: list[int] = []
    key_frames = decoded = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.skip_frame = "NONKEY"
        width, height = ctx.width, ctx.height
        for packet in container.demux(stream):
            if packet.pts is None:  # the demuxer's empty flush packet
                continue
            assert packet.time_base is not None
            positions.append(round(packet.pts * packet.time_base * rate))
            key_frames += packet.is_keyframe
            for frame in stream.decode(packet):
                decoded += (frame.width, frame.height) == (width, height)
        for frame in stream.decode(None):
            decoded += (frame.width, frame.height) == (width, height)
        fps = stream.average_rate or stream.base_rate or Fraction(0)
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        info = VideoInfo(frames=len(positions), width=width, height=height, fps=Fraction(fps),
                         codec=ctx.name, pix_fmt=ctx.pix_fmt or "", duration=duration)
    return VideoCheck(info=info, positions=positions, key_frames=key_frames,
                      key_frames_decoded=decoded)


def read_frames(path: str | Path) -> list[np.ndarray]:
    """Decode every frame of a video to RGB arrays (for checks and tests; holds them all)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return [f.to_ndarray(format="rgb24", src_colorspace=Colorspace.ITU709,
                             src_color_range=ColorRange.MPEG)
                for f in container.decode(stream)]


def scratch_file(suffix: str = ".mp4", folder: Path | None = None) -> Path:
    """A fresh temporary file path (the caller removes it)."""
    with tempfile.NamedTemporaryFile(suffix=suffix, dir=folder, delete=False) as f:
        return Path(f.name)
