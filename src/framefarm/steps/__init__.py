"""Application code: plan, render and encode. No runner and no cloud SDK is imported here; every
step takes one dataclass in, returns one out, and talks only to Storage and the sketch."""

from framefarm.steps.encode import EncodeRequest, EncodeResult, run_encode
from framefarm.steps.plan import PlanRequest, make_plan, new_run_id, run_plan
from framefarm.steps.render import RenderRequest, RenderResult, run_render

__all__ = [
    "EncodeRequest",
    "EncodeResult",
    "PlanRequest",
    "RenderRequest",
    "RenderResult",
    "make_plan",
    "new_run_id",
    "run_encode",
    "run_plan",
    "run_render",
]
