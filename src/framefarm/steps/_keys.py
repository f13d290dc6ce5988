"""Storage layout (DESIGN.md): the one place that knows where each object lives."""

from __future__ import annotations


def plan_key(run_id: str) -> str:
    """runs/{run_id}/plan.json"""
    return f"runs/{run_id}/plan.json"


def segment_key(run_id: str, index: int) -> str:
    """runs/{run_id}/segments/{index:05d}.mp4 — one encoded segment per chunk."""
    return f"runs/{run_id}/segments/{index:05d}.mp4"


def segments_prefix(run_id: str) -> str:
    """The folder of a run's segments."""
    return f"runs/{run_id}/segments/"


def frame_key(run_id: str, frame: int) -> str:
    """runs/{run_id}/frames/{frame:06d}.png — only when frames are kept."""
    return f"runs/{run_id}/frames/{frame:06d}.png"


def output_key(run_id: str) -> str:
    """runs/{run_id}/output.mp4 — the finished video."""
    return f"runs/{run_id}/output.mp4"


def sketch_key(sha256: str, suffix: str = ".py") -> str:
    """sketches/{sha256}.py — creative code, content-addressed."""
    return f"sketches/{sha256}{suffix}"
