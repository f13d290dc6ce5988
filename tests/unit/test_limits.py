"""framefarm's input limits, and that the frame-size limit is the encoder's own (real encodes)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from framefarm import limits
from framefarm.errors import UserError
from framefarm.model import VideoSettings
from framefarm.video import SegmentWriter, probe


@pytest.mark.parametrize("run_id", ["demo", "r1", "20240501-120000-a1b2c3", "batch-6f1c-4e2a",
                                    "Title_2024.05", "a" * 128, "x..y", "0"])
def test_run_ids_that_are_safe(run_id: str) -> None:
    assert limits.check_run_id(run_id) == run_id


@pytest.mark.parametrize(("run_id", "why"), [
    ("a" * 129, "is too long"), ("a" * 300, "is too long"), ("", "is not safe"),
    ("a/b", "is not safe"), ("..", "is not safe"), (".hidden", "is not safe"),
    ("-flag", "is not safe"), ("two words", "is not safe"), ("tab\there", "is not safe"),
    ("new\nline", "is not safe"), ("a\\b", "is not safe"), ("ünï", "is not safe"),
    ("a:b", "is not safe"), ("a*", "is not safe"), ("run?", "is not safe"),
])
def test_run_ids_that_are_refused(run_id: str, why: str) -> None:
    with pytest.raises(UserError) as caught:
        limits.check_run_id(run_id)
    message = str(caught.value)
    assert why in message and limits.RUN_ID_FORM in message
    assert "\n" not in message and len(message) < 200  # a 300-character id is shown cut short


def test_frames_limit() -> None:
    assert limits.check_frames("frames", limits.MAX_FRAMES) == limits.MAX_FRAMES
    for too_many in (limits.MAX_FRAMES + 1, 10**10, 2**63):
        with pytest.raises(UserError, match=rf"^frames must be at most 1,000,000,000 .*got {too_many}"):
            limits.check_frames("frames", too_many)


def test_frame_counts_in_a_plan_hit_the_limit() -> None:
    from framefarm.steps.plan import check_positive

    assert check_positive("frames", str(limits.MAX_FRAMES)) == limits.MAX_FRAMES
    with pytest.raises(UserError, match=r"^frames per job must be at most 1,000,000,000"):
        check_positive("frames per job", str(2**63))
    assert check_positive("width", 10**9, frame_count=False) == 10**9  # sizes: see below


@pytest.mark.parametrize(("size", "fits"), [
    ((2, 2), True), ((1280, 720), True), ((16384, 64), True), ((64, 16384), True),
    ((16384, 16128), True), ((16128, 16384), True), ((16254, 16254), True),
    ((16386, 64), False), ((64, 16386), False), ((40000, 64), False), ((16384, 16130), False),
    ((16256, 16256), False), ((100000, 100000), False), ((0, 64), False),
])
def test_fits_encoder(size: tuple[int, int], fits: bool) -> None:
    assert limits.fits_encoder(*size) is fits


@pytest.mark.parametrize(("size", "largest"), [
    ((40000, 64), (16384, 64)), ((64, 40000), (64, 16384)), ((100000, 100000), (16254, 16254)),
    ((16384, 16384), (16254, 16254)), ((20000, 10000), (16384, 10000)),
])
def test_largest_size_is_the_fix(size: tuple[int, int], largest: tuple[int, int]) -> None:
    assert limits.largest_size(*size) == largest
    assert limits.fits_encoder(*largest)
    with pytest.raises(UserError) as caught:
        limits.check_frame_size(*size, fix="use --size")
    assert str(caught.value).endswith(f"use --size {largest[0]}x{largest[1]} or smaller")


def test_size_messages_name_the_limit() -> None:
    with pytest.raises(UserError, match=r"^size 40000x64 is too large for H.264: libx264 encodes at "
                                        r"most 16384 pixels a side; use 16384x64 or smaller$"):
        limits.check_frame_size(40000, 64)
    with pytest.raises(UserError, match=r"^size 16384x16384 is too large for H.264: FFmpeg "
                                        r"allocates frames of at most about 268 million pixels"):
        limits.check_frame_size(16384, 16384)


def encode_one_frame(tmp_path: Path, width: int, height: int) -> None:
    """One black frame through framefarm's own encoder, as a render job encodes a chunk."""
    video = VideoSettings(width=width, height=height, fps="30", crf=30, preset="ultrafast")
    path = tmp_path / f"{width}x{height}.mp4"
    with SegmentWriter(path, video=video) as writer:
        writer.write(np.zeros((height, width, 3), np.uint8))
    assert probe(path).frames == 1
    path.unlink()


@pytest.mark.parametrize(("width", "height"), [(16384, 64), (64, 16384), (16386, 64), (64, 16386),
                                               (16384, 16130)])
def test_the_limits_are_the_encoders(tmp_path: Path, width: int, height: int) -> None:
    """Measured, not assumed: what limits.fits_encoder accepts, libx264 encodes; what it refuses,
    PyAV refuses (when opening the encoder, or when allocating the frame)."""
    if limits.fits_encoder(width, height):
        encode_one_frame(tmp_path, width, height)
    else:
        with pytest.raises(av.FFmpegError):
            encode_one_frame(tmp_path, width, height)


@pytest.mark.slow
def test_the_largest_frame_encodes(tmp_path: Path) -> None:
    """16384x16128, the most pixels FFmpeg allocates at libx264's widest (about 1.5 GB to encode)."""
    encode_one_frame(tmp_path, 16384, 16128)


def test_workers_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "cpu_count", lambda: 2)
    assert limits.max_workers() == limits.MAX_WORKERS == 256
    assert limits.check_workers("workers", 256) == 256
    with pytest.raises(UserError, match=r"^workers must be at most 256, got 1000: .*this machine "
                                        r"has 2\); use 2 or leave it out"):
        limits.check_workers("workers", 1000)
    monkeypatch.setattr(limits, "cpu_count", lambda: 384)  # a machine with more CPUs may use them
    assert limits.check_workers("workers", 384) == 384


@pytest.mark.parametrize("name", ["out.mp4", "OUT.MP4", "a/b/v.m4v", "s3://bucket/p/video.mp4",
                                  "file:///tmp/v.mp4", "my.video.mp4"])
def test_output_names_accepted(name: str) -> None:
    assert limits.check_output_name(name) == name


@pytest.mark.parametrize(("name", "example"), [
    ("out.avi", "out.mp4"), ("out.gif", "out.mp4"), ("dir/x.mkv", "dir/x.mp4"),
    ("x.mov", "x.mp4"), ("x.webm", "x.mp4"), ("video", "video.mp4"), ("x.", "x.mp4"),
    ("frames/", "frames/video.mp4"), ("s3://b/p/v.mkv", "s3://b/p/v.mp4"),
])
def test_output_names_refused(name: str, example: str) -> None:
    with pytest.raises(UserError) as caught:
        limits.check_output_name(name)
    message = str(caught.value)
    assert message.startswith(f"output {name!r} names ")
    assert message.endswith(f"framefarm writes H.264 in MP4, so name the output .mp4, e.g. {example}")



@pytest.mark.parametrize("text, size", [
    ("8G", 8 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("2048MB", 2 << 30),
    ("64k", 64 << 10), ("1000000", 1_000_000), (" 2g ", 2 << 30),
])
def test_memory_amounts(text: str, size: int) -> None:
    assert limits.parse_memory("--max-memory", text) == size


@pytest.mark.parametrize("text", ["lots", "0", "-1G", "8X", "", "G", "inf", "nan"])
def test_memory_amounts_refused(text: str) -> None:
    with pytest.raises(UserError, match=r"--max-memory .* is not an amount of memory: use a "
                                          r"number with a unit, like 8G or 512M"):
        limits.parse_memory("--max-memory", text)
