"""PyAV encoding: segments start on a key frame and join without re-encoding, in plan order."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framefarm.model import VideoSettings
from framefarm.video import (
    KEYINT,
    SegmentWriter,
    concat_segments,
    inspect_video,
    probe,
    read_frames,
    segment_keyint,
)

VIDEO = VideoSettings(width=96, height=64, fps="24", crf=16, preset="ultrafast")


def gradient(i: int) -> np.ndarray:
    """A smooth frame that changes with i, so order mistakes show in PSNR."""
    y, x = np.mgrid[0:VIDEO.height, 0:VIDEO.width].astype(np.float32)
    t = i / 6
    return np.dstack([
        128 + 100 * np.sin(x / 13 + t), 128 + 100 * np.sin(y / 9 - t), 128 + 100 * np.cos((x + y) / 17 + t)
    ]).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def write_segment(path: Path, frames: range, *, rgba: bool = False) -> Path:
    with SegmentWriter(path, video=VIDEO) as writer:
        for i in frames:
            pixels = gradient(i)
            if rgba:
                pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
            writer.write(pixels)
    return path


def test_segment_starts_on_a_key_frame_and_has_its_frames(tmp_path: Path) -> None:
    seg = write_segment(tmp_path / "s.mp4", range(10, 20))
    with av.open(str(seg)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
        assert packets[0].is_keyframe
    info = probe(seg)
    assert (info.frames, info.width, info.height, info.fps) == (10, 96, 64, Fraction(24))
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")


def test_join_uneven_segments_frame_exact(tmp_path: Path) -> None:
    starts = [0, 7, 14, 21]
    segs = [(write_segment(tmp_path / f"{i}.mp4", range(s, min(s + 7, 25))), s)
            for i, s in enumerate(starts)]
    out = tmp_path / "out.mp4"
    # Joined in the order given, which need not be the files' names' order.
    concat_segments(segs, out, rate=VIDEO.rate)
    frames = read_frames(out)
    assert len(frames) == 25
    for i, frame in enumerate(frames):
        assert psnr(frame, gradient(i)) >= 35, f"frame {i}"
    # The check can fail: a neighbouring frame is clearly different.
    assert psnr(frames[10], gradient(11)) < psnr(frames[10], gradient(10)) - 3


def test_join_one_frame_segments(tmp_path: Path) -> None:
    segs = [(write_segment(tmp_path / f"{i}.mp4", range(i, i + 1)), i) for i in range(5)]
    concat_segments(segs, tmp_path / "out.mp4", rate=VIDEO.rate)
    info = probe(tmp_path / "out.mp4")
    assert info.frames == 5
    assert info.duration == pytest.approx(5 / 24, abs=0.05)


def test_rgba_frames_encode_like_rgb(tmp_path: Path) -> None:
    seg = write_segment(tmp_path / "a.mp4", range(3), rgba=True)
    frames = read_frames(seg)
    assert [round(psnr(f, gradient(i))) >= 35 for i, f in enumerate(frames)] == [True] * 3


def test_stream_is_tagged_bt709(tmp_path: Path) -> None:
    seg = write_segment(tmp_path / "s.mp4", range(2))
    with av.open(str(seg)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc) == (1, 1, 1)


def test_fractional_frame_rate(tmp_path: Path) -> None:
    video = VideoSettings(width=32, height=32, fps="29.97", preset="ultrafast")
    assert video.rate == Fraction(30000, 1001)
    segs = []
    for i, start in enumerate((0, 5)):
        path = tmp_path / f"{i}.mp4"
        with SegmentWriter(path, video=video) as w:
            for _ in range(5):
                w.write(np.zeros((32, 32, 3), np.uint8))
        segs.append((path, start))
    concat_segments(segs, tmp_path / "out.mp4", rate=video.rate)
    info = probe(tmp_path / "out.mp4")
    assert info.frames == 10
    assert info.fps == Fraction(30000, 1001)


def test_inspect_sees_every_frame_in_place_and_decodes_key_frames(tmp_path: Path) -> None:
    segs = [(write_segment(tmp_path / f"{i}.mp4", range(s, min(s + 4, 10))), s)
            for i, s in enumerate((0, 4, 8))]
    concat_segments(segs, tmp_path / "out.mp4", rate=VIDEO.rate)
    check = inspect_video(tmp_path / "out.mp4", rate=VIDEO.rate)
    assert sorted(check.positions) == list(range(10))
    assert check.key_frames == check.key_frames_decoded == 3
    assert (check.info.frames, check.info.width, check.info.height) == (10, 96, 64)


def test_inspect_notices_a_misplaced_segment(tmp_path: Path) -> None:
    segs = [(write_segment(tmp_path / f"{i}.mp4", range(4)), start) for i, start in
            enumerate((0, 5))]  # the second segment claims frames 5..8: frame 4 is missing
    concat_segments(segs, tmp_path / "out.mp4", rate=VIDEO.rate)
    check = inspect_video(tmp_path / "out.mp4", rate=VIDEO.rate)
    assert check.info.frames == 8
    assert sorted(check.positions) == [0, 1, 2, 3, 5, 6, 7, 8]


@pytest.mark.parametrize("frames, keyint", [
    (1, KEYINT), (60, KEYINT), (KEYINT - 1, KEYINT),   # short: x264's own interval
    (KEYINT, KEYINT), (2 * KEYINT - 1, 2 * KEYINT - 1),  # one group of pictures
    (2 * KEYINT, KEYINT), (3 * KEYINT + 10, KEYINT + 4),  # as many groups as one encode has
])
def test_segment_keyint(frames: int, keyint: int) -> None:
    assert segment_keyint(frames) == keyint
    groups = -(-frames // segment_keyint(frames))
    assert groups <= max(1, frames // KEYINT)  # never more key frames than one long encode


def test_segments_of_other_settings_are_not_joined(tmp_path: Path) -> None:
    """An interval shorter than x264's B-frame run changes its sequence header: such a segment
    would not decode under the first one's, so the join refuses it."""
    fast = VideoSettings(width=VIDEO.width, height=VIDEO.height, fps=VIDEO.fps, preset="fast")
    first, other = tmp_path / "0.mp4", tmp_path / "1.mp4"
    for path, keyint, frames in ((first, 0, range(0, 6)), (other, 2, range(6, 12))):
        with SegmentWriter(path, video=fast, keyint=keyint) as writer:
            for i in frames:
                writer.write(gradient(i))
    with pytest.raises(ValueError, match=r"1\.mp4 was encoded with other settings"):
        concat_segments([(first, 0), (other, 6)], tmp_path / "out.mp4", rate=VIDEO.rate)
