"""The public surface: what `import framefarm` promises, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import framefarm


def test_all_names_resolve() -> None:
    for name in framefarm.__all__:
        assert getattr(framefarm, name) is not None


def test_public_surface_is_guarded() -> None:
    assert sorted(framefarm.__all__) == [
        "Chunk", "FrameContext", "Plan", "PlanRequest", "SketchError", "UserError",
        "VideoSettings", "__version__", "load_sketch", "make_plan", "render"]


def test_job_entrypoint_does_not_import_cloud_sdks_or_matplotlib() -> None:
    code = ("import sys, framefarm.job, framefarm.runners.local; "
            "print(sorted(m for m in ('boto3', 'botocore', 'matplotlib', 'temporalio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_steps_import_no_runner() -> None:
    code = ("import sys, framefarm.steps; "
            "print(sorted(m for m in sys.modules if m.startswith('framefarm.runners')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
