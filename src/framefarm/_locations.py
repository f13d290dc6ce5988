"""What a location names, decided in one place for every caller: a URL or a path (storage,
outputs), and for a sketch a URL, an installed module or a file (the CLI, the Python API, the
sketch loader, the remote runners' staging). Imports nothing of framefarm's, so the sketch
loader pays for no storage or tracing import."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def split_url(url: str) -> tuple[str, str]:
    """(scheme in lower case, the rest after '://'); the scheme is '' when there is none."""
    match = _SCHEME.match(url)
    if match is None:
        return "", url
    return match.group(1).lower(), url[match.end():]


def is_url(location: str) -> bool:
    """True when `location` names something by URL (`s3://…`, `file:///…`), not a local path."""
    return bool(split_url(location)[0])

LocationKind = Literal["url", "module", "file"]


def sketch_location_kind(location: str) -> LocationKind:
    """`url`: a storage URL (`s3://…/sketch.py`); `module`: an installed
    `package.module:function`; `file`: a path to a .py file (which may not exist)."""
    if is_url(location):
        return "url"
    if ":" in location and not location.endswith(".py") and not Path(location).exists():
        return "module"
    return "file"
