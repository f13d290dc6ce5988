"""Checks the CLI's commands share, on what a user named: the output video's path, and the
job log to read from. Apart from cli.py so that its commands (_render_cmd, _lifecycle_cmd)
import them without importing the CLI itself."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from framefarm import limits
from framefarm.errors import UserError

if TYPE_CHECKING:
    from framefarm.joblog import JobLog


def existing_joblog(url: str) -> JobLog | None:
    """The job log at `url` for reading, or None when it is an SQLite file that does not exist:
    opening one creates it (and ./framefarm-data), and looking must not leave anything behind."""
    from framefarm.joblog import open_joblog
    from framefarm.storage import default_scheme

    path = _sqlite_path(url) if default_scheme(url, "sqlite") == "sqlite" else None
    if path is not None and not path.exists():
        return None
    return open_joblog(url)


def _sqlite_path(url: str) -> Path | None:
    """The file an SQLite job-log URL names, read as SqliteJobLog.from_url reads it; None for a
    URL it refuses (opening it says why)."""
    if not url.startswith("sqlite:"):
        return Path(os.path.abspath(Path(url).expanduser()))
    rest = url.removeprefix("sqlite:")
    if not rest.startswith("///") or rest in ("///", "///:memory:"):
        return None
    return Path(os.path.abspath(Path(rest[3:]).expanduser()))


def check_output_path(output: str) -> Path:
    """The output video's absolute path, after checking that it names an MP4 file
    (limits.check_output_name) and that its folder exists and can be written."""
    path = Path(output).expanduser().resolve()
    if path.is_dir():
        raise UserError(f"output {output!r} is a folder: "
                        f"give a file name like {output.rstrip('/')}/video.mp4")
    limits.check_output_name(output)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".framefarm-check-"):
            pass
    except OSError:
        raise UserError(f"cannot write the output {output!r}: its folder {folder} is not writable; "
                        "choose another -o") from None
    return path
