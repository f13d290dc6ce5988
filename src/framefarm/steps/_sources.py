"""Where a render job gets its pixels from: the sketch fetched from storage, set up once per
process and reused by every chunk that process renders."""

from __future__ import annotations

import hashlib
import tempfile
from fractions import Fraction
from pathlib import Path

from framefarm.assets import bundle_of, fetch_bundle
from framefarm.sketch import FrameSource, load_sketch
from framefarm.storage import Storage, open_storage

_cache_dir: Path | None = None
_sources: dict[tuple[str, int, int, Fraction, int], FrameSource] = {}


def fetch_to_local(url: str, storage: Storage | None = None) -> Path:
    """A local file holding the object at storage URL `url` (no copy when it is already local)."""
    if storage is not None and url.startswith(storage.url.rstrip("/") + "/"):
        key = url[len(storage.url.rstrip("/")) + 1:]
    else:
        parent, key = url.rsplit("/", 1)
        storage = open_storage(parent)
    local = storage.local_path(key)
    if local is not None:
        return local  # a bundle's assets are beside it already
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="framefarm-sketches-"))
    bundle = bundle_of(key)
    if bundle is not None:  # the sketch with its assets, laid out as beside the user's file
        into = _cache_dir / bundle
        fetch_bundle(storage, bundle, into)
        return into / key[len(bundle):]
    name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + Path(key).name
    return storage.get_file(key, _cache_dir / name)


def frame_source(location: str, *, storage: Storage, width: int, height: int, rate: Fraction,
                 total_frames: int, display_name: str = "") -> FrameSource:
    """The process's FrameSource for this sketch and video; setup() runs on first use only."""
    cache_key = (location, width, height, rate, total_frames)
    source = _sources.get(cache_key)
    if source is None:
        sketch = load_sketch(location, storage_loader=lambda url: fetch_to_local(url, storage),
                             display_name=display_name or None)
        source = FrameSource(sketch, width=width, height=height, fps=rate,
                             total_frames=total_frames)
        _sources[cache_key] = source
    return source
