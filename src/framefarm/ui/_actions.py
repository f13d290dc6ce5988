"""What the web view's buttons do, through the code the commands run: cancel is
`framefarm cancel`'s own function (_lifecycle_cmd.cancel), called in the server's process;
resume is `framefarm resume RUN` itself, started as a process of its own that outlives the
request (a resume drives the run to its end, as the command does in a terminal); delete removes
the run's objects from storage."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from framefarm import _lifecycle_cmd
from framefarm.joblog import JobLog
from framefarm.model import TERMINAL_STATUSES, RunRecord
from framefarm.report import load_report
from framefarm.storage import Storage

RESUME_STARTED = "resuming run"
"""What `framefarm resume` says (stderr) once it holds the run and starts rendering."""
RESUME_WAIT_SECONDS = 20.0
"""How long a resume request waits to hear that the command took the run, or why not."""

_printing = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    """How an action went: an HTTP status, and the commands' own words."""

    status: int
    message: str
    details: dict[str, object] | None = None


def cancel(joblog: JobLog, run: RunRecord) -> Outcome:
    """`framefarm cancel RUN`: the same function, its printed line as the message."""
    out = io.StringIO()
    with _printing, contextlib.redirect_stdout(out):  # its words are for the page
        _lifecycle_cmd.cancel(run, joblog)
    return Outcome(200, out.getvalue().strip())


def framefarm_command() -> list[str]:
    """The `framefarm` command of this interpreter's environment."""
    exe = shutil.which("framefarm", path=str(Path(sys.executable).parent)) or shutil.which("framefarm")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from framefarm.cli import entry; "
                                  "sys.argv[0] = 'framefarm'; entry()"]


def resume(run: RunRecord, *, storage_url: str, joblog_url: str, logs: Path) -> Outcome:
    """Start `framefarm resume RUN` with this server's storage and job log, in a session of its
    own (it goes on when the server stops), its output in a log file; wait until it says it
    took the run (202) or has ended (its exit code: 200 done, 409 refused, 500 failed)."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"resume-{run.run_id}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    argv = [*framefarm_command(), "resume", run.run_id, "--storage", storage_url,
            "--joblog", joblog_url]
    if run.runner == "batch":
        argv.append("--no-wait")  # AWS Batch runs on: the page follows the job log
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    threading.Thread(target=process.wait, daemon=True, name=f"framefarm-ui-resume-{process.pid}").start()
    deadline = time.monotonic() + RESUME_WAIT_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        said = log.read_text(errors="replace")
        if code is not None:
            message = _last_line(said) or f"framefarm resume exited {code}"
            status = 200 if code == 0 else 409 if code == 2 else 500
            return Outcome(status, message, {"pid": process.pid, "exit_code": code, "log": str(log)})
        if RESUME_STARTED in said:
            line = next(x for x in said.splitlines() if RESUME_STARTED in x)
            return Outcome(202, line.removeprefix("framefarm: "),
                           {"pid": process.pid, "exit_code": None, "log": str(log)})
        time.sleep(0.05)
    return Outcome(202, f"framefarm resume {run.run_id} is starting (pid {process.pid})",
                   {"pid": process.pid, "exit_code": None, "log": str(log)})


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("framefarm: ") if lines else ""


def delete(joblog: JobLog, storage: Storage, run: RunRecord) -> Outcome:
    """Remove the run's objects from storage (plan, segments, frames, trace, video); its
    records stay in the job log. Refused while the run renders."""
    holder = joblog.lease(run.run_id)
    status = (load_report(joblog, run.run_id) or {}).get("status", "")
    if holder is not None or status not in TERMINAL_STATUSES:
        who = f" by {holder.describe()}" if holder is not None else ""
        return Outcome(409, f"run {run.run_id} is {status or 'RUNNING'}{who}: cancel it before "
                            "deleting its data")
    keys = storage.list(f"runs/{run.run_id}/")
    for key in keys:
        storage.delete(key)
    return Outcome(200, f"run {run.run_id}: deleted {len(keys)} objects from {storage.url} "
                        "(its job-log records are kept)", {"deleted": len(keys)})
