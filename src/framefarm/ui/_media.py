"""The run's video and its preview, from storage: the video as a local file to serve in byte
ranges (local storage's own file; another backend's copied once into a cache folder through the
Storage API), and the preview, the first frame of the latest finished chunk's segment decoded
with PyAV and kept as a small JPEG."""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from pathlib import Path

from framefarm.errors import StorageKeyError
from framefarm.steps._keys import output_key, segment_key
from framefarm.storage import Storage

PREVIEW_WIDTH = 320
PREVIEWS_KEPT = 64
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Unsatisfiable(ValueError):
    """A Range header that names no byte of the file (HTTP 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [first, last] bytes a Range header asks for (one range), None for the whole file;
    Unsatisfiable when it names none of the file's `size` bytes. A header that is not one
    bytes range is ignored, as RFC 9110 lets a server do."""
    if not header:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None:
        return None
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - count), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise Unsatisfiable(header)
    return start, end


class MediaCache:
    """Videos of storage without local files, copied once each; previews, decoded once each."""

    def __init__(self, storage: Storage, folder: Path) -> None:
        self.storage = storage
        self.folder = folder
        self._lock = threading.Lock()
        self._previews: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._fetching: dict[str, threading.Lock] = {}

    def video(self, run_id: str) -> Path | None:
        """A local file holding the run's stored video, or None when it has none yet."""
        key = output_key(run_id)
        local = self.storage.local_path(key)
        if local is not None:
            return local
        copy = self.folder / run_id / "output.mp4"
        with self._lock:
            fetching = self._fetching.setdefault(run_id, threading.Lock())
        with fetching:  # one download per video, however many requests ask at once
            if copy.is_file():
                return copy
            try:
                return self.storage.get_file(key, copy)
            except StorageKeyError:
                return None

    def forget(self, run_id: str) -> None:
        """Drop what is kept of a run (its data was deleted)."""
        (self.folder / run_id / "output.mp4").unlink(missing_ok=True)
        with self._lock:
            for key in [k for k in self._previews if k[0] == run_id]:
                del self._previews[key]

    def preview(self, run_id: str, index: int, sha256: str = "") -> bytes | None:
        """The first frame of chunk `index`'s segment as a JPEG at most PREVIEW_WIDTH wide;
        None when the segment is not stored. Kept by (run, chunk, segment checksum)."""
        wanted = (run_id, index, sha256)
        with self._lock:
            if wanted in self._previews:
                self._previews.move_to_end(wanted)
                return self._previews[wanted]
        key = segment_key(run_id, index)
        local = self.storage.local_path(key)
        try:
            data = local.read_bytes() if local is not None else self.storage.get_bytes(key)
        except (StorageKeyError, OSError):
            return None
        picture = first_frame_jpeg(data)
        with self._lock:
            self._previews[wanted] = picture
            while len(self._previews) > PREVIEWS_KEPT:
                self._previews.popitem(last=False)
        return picture


def first_frame_jpeg(segment: bytes, width: int = PREVIEW_WIDTH) -> bytes:
    """The first frame of an encoded segment, scaled to at most `width` pixels wide, as JPEG."""
    import av
    from PIL import Image

    with av.open(io.BytesIO(segment), mode="r") as container:
        frame = next(container.decode(video=0))
        image = Image.fromarray(frame.to_ndarray(format="rgb24"))
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()
