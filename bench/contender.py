"""Run one contender in this fresh process: `python bench/contender.py NAME WORKLOAD_JSON OUT`.

bench/run.py starts every contender but framefarm (which runs as `framefarm render`) this way
and measures it from outside; this entry imports only the benchmark's small modules, so no
contender pays for what the harness itself needs (the OTLP receiver, psutil).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import contenders, kinds, peers
from bench.harness import Workload

CONTENDERS: dict[str, Callable[[Workload, Path], None]] = {
    "naive": contenders.naive, "matplotlib": contenders.matplotlib_own, "pool": contenders.pool,
    "limit": contenders.limit, "limit-every-core": contenders.limit_every_core,
    "floor": contenders.reference,
    "memory-parts": contenders.memory_parts, "reference": contenders.reference, **peers.CONTENDERS,
    **kinds.CONTENDERS,
}


def main(argv: list[str]) -> int:
    name, workload, out = argv
    CONTENDERS[name](Workload.from_json(workload), Path(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
