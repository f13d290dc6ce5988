"""What kind of thing a sketch location names, decided in one place for every caller (the CLI,
the Python API, the sketch loader, the remote runners' staging)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from framefarm.storage import is_url

LocationKind = Literal["url", "module", "file"]


def sketch_location_kind(location: str) -> LocationKind:
    """`url`: a storage URL (`s3://…/sketch.py`); `module`: an installed
    `package.module:function`; `file`: a path to a .py file (which may not exist)."""
    if is_url(location):
        return "url"
    if ":" in location and not location.endswith(".py") and not Path(location).exists():
        return "module"
    return "file"
