"""The run's own copy of its spans in storage: each job's part under `runs/{run}/trace/`,
merged into `runs/{run}/trace.jsonl` (the format is in framefarm.tracing's docstring).

Apart from tracing.py, which storage itself imports (every Storage call is traced), so that
the two never import each other.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from typing import Any

from framefarm.errors import StorageKeyError
from framefarm.storage import Storage
from framefarm.tracing import trace_key, trace_prefix

__all__ = ["load_spans", "merge_spans"]

_SPAN_ID = re.compile(rb'"span_id":\s*"([0-9a-f]{16})"')


def _lines(storage: Storage, run_id: str) -> tuple[Iterator[bytes], list[str]]:
    """Each stored span's JSON line, once (a span merged and still in its part is skipped),
    and the parts read."""
    parts = storage.list(trace_prefix(run_id))

    def lines() -> Iterator[bytes]:
        seen: set[bytes] = set()
        for key in (trace_key(run_id), *parts):
            try:
                data = storage.get_bytes(key)
            except StorageKeyError:  # not merged yet, or merged and removed meanwhile
                continue
            for line in data.splitlines():
                found = _SPAN_ID.search(line)
                if found is None or found.group(1) in seen:
                    continue
                seen.add(found.group(1))
                yield line

    return lines(), parts


def load_spans(storage: Storage, run_id: str) -> list[dict[str, Any]]:
    """Every stored span of the run (merged and not yet merged), once each, by start time."""
    lines, _ = _lines(storage, run_id)
    return sorted((json.loads(line) for line in lines), key=lambda s: (s["start"], s["end"]))


def merge_spans(storage: Storage, run_id: str) -> int:
    """Merge the jobs' stored spans into `trace.jsonl` (then remove the merged parts); returns
    the number of spans the run has.

    Lines are copied as they are, through a scratch file: a run of a million frames has a
    million frame spans (~400 MB), which are never parsed here.
    """
    lines, parts = _lines(storage, run_id)
    if not parts:
        return sum(1 for _ in lines)
    count = 0
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as scratch:
        for line in lines:
            scratch.write(line + b"\n")
            count += 1
        scratch.flush()
        storage.put_file(trace_key(run_id), scratch.name)
    for key in parts:
        storage.delete(key)
    return count
