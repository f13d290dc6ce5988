"""The `framefarm` command: parse flags into the job contract, hand it to a runner, report.

No business logic lives here: flags become job-contract variables, the runner runs the jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from framefarm import config, limits
from framefarm._cli_checks import existing_joblog
from framefarm.errors import TransientError, UserError
from framefarm.kinds import KINDS
from framefarm.runners import runner_front, runner_fronts

T = TypeVar("T")

SIGPIPE_EXIT = 141
"""The exit code when the reader of our output went away (`| head`): 128 + SIGPIPE, as a shell
reports for any program that `head` stopped."""

_SIZE_HELP = "frame size as WIDTHxHEIGHT, both even (default: the sketch's WIDTH/HEIGHT, else 1280x720)"


def positive_int(text: str) -> int:
    """argparse type: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _checked(check: Callable[[T], T], value: T) -> T:
    """`check(value)`, its UserError turned into argparse's error (one line, exit 2)."""
    try:
        return check(value)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def frame_count(text: str, what: str = "frames") -> int:
    """argparse type: a whole number of frames, above 0 and at most limits.MAX_FRAMES."""
    return _checked(lambda n: limits.check_frames(what, n), positive_int(text))


def per_job(text: str) -> int | None:
    """argparse type: a number of frames (see frame_count), or auto (None: the plan sizes chunks)."""
    return None if text.strip().lower() == "auto" else frame_count(text, "frames per job")


def memory(text: str) -> int:
    """argparse type: an amount of memory, `8G` or `512M`, as bytes."""
    try:
        return limits.parse_memory("--max-memory", text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def workers(text: str) -> int:
    """argparse type: a number of worker processes, above 0 and at most limits.max_workers()."""
    return _checked(lambda n: limits.check_workers("workers", n), positive_int(text))


def run_id(text: str) -> str:
    """argparse type: a run id that is safe as a file name and an S3 key (limits.check_run_id)."""
    return _checked(limits.check_run_id, text)


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 to 65535")
    return value


def bar_width(text: str) -> int:
    """argparse type: a bar width in columns, 1 to 1,000."""
    value = positive_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is more than 1000 columns")
    return value


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: WIDTHxHEIGHT with positive, even numbers that the encoder takes."""
    parts = text.lower().split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: use WIDTHxHEIGHT, e.g. 1280x720") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be above 0")
    if width % 2 or height % 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: H.264 in yuv420p needs an even width and height, "
            f"e.g. {width + width % 2}x{height + height % 2}")
    return _checked(lambda size: limits.check_frame_size(*size), (width, height))


def seconds(text: str) -> float:
    """argparse type: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (no limit) or more seconds")
    return value


def percentage(text: str) -> float:
    """argparse type: a percentage, 0 to 100 (a trailing % is allowed)."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (e.g. 2)") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 to 100 (percent)")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line and exit code 2 (its usage goes to --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def named_runner(argv: Sequence[str]) -> str | None:
    """The --runner a command line names, read before parsing: another package's runner adds
    its flags to the parser only when named (finding those costs a scan of the installed
    packages)."""
    for i, arg in enumerate(argv):
        if arg == "--runner" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--runner="):
            return arg.partition("=")[2]
    return None


def build_parser(runner: str | None = None) -> argparse.ArgumentParser:
    """The command line, every sub-command and flag; with `runner`, that runner's flags too
    when it is another package's."""
    parser = _Parser(prog="framefarm", description="Render a Python sketch in parallel to one video.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    render = sub.add_parser("render", help="render a sketch to a video")
    render.add_argument("sketch", help="a .py file or package.module:function with render(ctx), "
                        "or a GLSL shader (.frag, .glsl: Shadertoy's mainImage or a plain program)")
    render.add_argument("-o", "--output", required=True,
                        help="the video to write: an .mp4 (or .m4v) file, e.g. out.mp4")
    add = render.add_argument
    add("--frames", type=frame_count, help=f"frames in the video, at most {limits.MAX_FRAMES:,} "
                                           "(default: the sketch's FRAMES)")
    add("--per-job", type=per_job, dest="per_job", default="auto",
        help="frames per render job, or auto (the default): sized from a probe frame's time")
    add("--size-budget", type=percentage, dest="size_budget", metavar="PERCENT",
        help="with auto chunks: how much larger the video may get (estimated from two probe "
             "frames) so that short videos split into a segment per worker, which is faster; "
             "0, the default, keeps segments at x264's key-frame interval (e.g. 2: plasma on 2 "
             "cores 1.2x faster, +0.4%% bytes)")
    add("--kind", choices=tuple(KINDS),
        help="the kind of creative code the sketch is (default: its file says: .py a sketch, "
             "or an animation when it makes a matplotlib FuncAnimation and has no render(ctx); "
             ".frag/.glsl a shader; .blend a Blender scene)")
    add("--asset", action="append", metavar="PATH",
        help="a file or folder beside the sketch that it reads (textures, data, modules it "
             "imports), laid out beside it in every job; repeat for more (a sketch's module-level "
             "ASSETS list names them too)")
    add("--fps", help="frames per second, e.g. 30 or 29.97 (default: the sketch's FPS, else 30)")
    add("--size", type=frame_size, help=_SIZE_HELP)
    add("--workers", type=workers, help=f"worker processes, at most {limits.MAX_WORKERS} "
                                        "(default: CPU count)")
    add("--max-memory", type=memory, dest="max_memory", metavar="SIZE",
        help="memory the run may take, e.g. 8G: it caps the chunks encoded at once, local runs "
             "(default: what the machine has available)")
    add("--run-id", dest="run_id", type=run_id,
        help=f"name the run: {limits.RUN_ID_FORM} (default: date, time and a random suffix)")
    add("--storage", help="where frames, segments and videos go (default: file:// under ./framefarm-data)")
    add("--joblog", help="the job log (default: sqlite:/// under ./framefarm-data)")
    add("--crf", type=int, help=f"x264 quality, 0 (lossless) to 51 (default {config.DEFAULT_CRF})")
    add("--preset", help=f"x264 preset, ultrafast to veryslow (default {config.DEFAULT_PRESET})")
    add("--frame-timeout", type=seconds, dest="frame_timeout", metavar="SECONDS",
        help=f"seconds one frame may take before its job fails and is retried, 0 for no limit "
             f"(or {config.FRAME_TIMEOUT}; default {config.DEFAULT_FRAME_TIMEOUT:g})")
    render.add_argument("--keep-frames", action="store_true", dest="keep_frames",
                        help="also store every frame as PNG under runs/RUN/frames/")
    render.add_argument("--runner", default="local", help="who runs the jobs: local (the default), "
                        "batch (AWS Batch), temporal (Temporal workers) or stepfunctions (AWS Step "
                        "Functions running AWS Batch jobs)")
    fronts = runner_fronts(runner)
    for front in fronts:  # each runner's own flags, declared by the runner (runners/_front.py)
        if front.render_flags():
            front.add_arguments(render.add_argument_group(front.group_title))

    worker = sub.add_parser("worker", help="run a Temporal worker: it runs the jobs of "
                                           "`render --runner temporal` runs until stopped")
    runner_front("temporal").add_connection_arguments(worker)
    worker.add_argument("--workers", type=workers, metavar="N",
                        help="processes, one job each (default: CPU count)")
    worker.add_argument("--identity", metavar="NAME",
                        help="the worker's name in Temporal (default: pid@host)")

    sub.add_parser("job", help="run one step from the job contract's environment variables "
                               "(the container entrypoint)")

    resume = sub.add_parser("resume", help="finish an interrupted, failed or cancelled run: render "
                                           "only the chunks without a verified segment, then encode")
    resume.add_argument("run_id", metavar="RUN", type=run_id)
    resume.add_argument("--storage", help="the run's storage (default: file:// under ./framefarm-data)")
    resume.add_argument("--joblog", help="the job log (default: sqlite:/// under ./framefarm-data)")
    resume.add_argument("--workers", type=workers,
                        help="worker processes, local runs (default: CPU count)")
    resume.add_argument("--max-memory", type=memory, dest="max_memory", metavar="SIZE",
                        help="memory the run may take, e.g. 8G, local runs (default: what the "
                             "machine has available)")
    resume.add_argument("--frame-timeout", type=seconds, dest="frame_timeout", metavar="SECONDS",
                        help="seconds one frame may take, 0 for no limit (default: as the run had)")
    resume.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="AWS Batch runs: follow the run to its end and download the video "
                             "(the default), or return once its jobs are submitted (--no-wait)")
    for front in fronts:
        if front.connection_flags():
            front.add_connection_arguments(
                resume.add_argument_group(f"{front.title} runs (default: as the run had)"))

    cancel = sub.add_parser("cancel", help="stop a run from any shell: its driver and its jobs, "
                                           "on any runner; `resume` finishes it later")
    cancel.add_argument("run_id", metavar="RUN", type=run_id)
    cancel.add_argument("--storage", help="the run's storage (default: file:// under ./framefarm-data)")
    cancel.add_argument("--joblog", help="the job log (default: sqlite:/// under ./framefarm-data)")
    for front in fronts:
        if front.connection_flags():
            front.add_connection_arguments(
                cancel.add_argument_group(f"{front.title} runs (default: as the run had)"))

    status = sub.add_parser("status", help="show one run's jobs from the job log")
    status.add_argument("run_id", metavar="RUN", type=run_id)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--joblog", help="the job log (default: sqlite:/// under ./framefarm-data)")

    runs = sub.add_parser("runs", help="list the runs in the job log")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.add_argument("--joblog", help="the job log (default: sqlite:/// under ./framefarm-data)")

    trace = sub.add_parser("trace", help="show where one run's time went, from its stored spans")
    trace.add_argument("run_id", metavar="RUN", type=run_id)
    trace.add_argument("--storage",
                       help="where the run's spans are (default: file:// under ./framefarm-data)")
    trace.add_argument("--json", action="store_true", help="print the report as JSON")
    trace.add_argument("--width", type=bar_width, default=50, help="bar width in columns (default 50)")

    ui = sub.add_parser("ui", help="serve a web view of the runs: watch them render, play their "
                                   "videos, cancel and resume them (extra: ui)")
    ui.add_argument("--storage", help="the runs' storage (default: file:// under ./framefarm-data)")
    ui.add_argument("--joblog", help="the job log (default: sqlite:/// under ./framefarm-data)")
    ui.add_argument("--host", default="127.0.0.1",
                    help="the address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=port, default=8765, help="the port (default 8765; 0: any free one)")
    ui.add_argument("--open", action="store_true", help="open the page in a web browser")
    return parser


def entry() -> None:
    """The `framefarm` console script: `main`, then a quick exit.

    Once the command has returned, its files are closed, its job log committed and its spans
    flushed; what is left is the interpreter tearing down every module and object one by one
    (NumPy, PyAV and FFmpeg's), ~0.1 s that a 1-frame render would spend waiting for nothing. So
    the exit handlers run (multiprocessing's clean-up of its helper processes and folders among
    them), the standard streams are flushed, and the process ends with os._exit. A command that
    raised exits the ordinary way, traceback and all.
    """
    import atexit

    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a closed or broken stream: nothing more can be said there
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `framefarm` command (the console script's, through `entry`)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that went away shows here, not at exit
    except BrokenPipeError:
        if not _output_closed():
            raise  # some other pipe: a fault with its traceback
        # `framefarm runs --json | head`: stop quietly, as any command that head stopped does;
        # what is left in stdout's buffer goes to /dev/null, not to a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT
    return code


def _output_closed() -> bool:
    """True when nobody reads stdout any more (its pipe's reader has closed it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() here, or stdout is not a file
        return True


def _main(argv: Sequence[str] | None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(named_runner(given)).parse_args(given)
    try:
        if args.command == "job":
            from framefarm.job import main as job_main
            from framefarm.runners import plan_hook

            return job_main(plan_hook=plan_hook)
        if args.command == "render":
            from framefarm._render_cmd import render_command

            return render_command(args)
        if args.command == "worker":
            return _worker(args)
        if args.command in ("resume", "cancel"):
            from framefarm import _lifecycle_cmd

            return _lifecycle_cmd.main(args)
        if args.command == "status":
            return _status(args)
        if args.command == "trace":
            return _trace(args)
        if args.command == "ui":
            from framefarm.ui import _cmd as ui_cmd

            return ui_cmd.main(args)
        return _runs(args)
    except (UserError, TransientError) as exc:
        print(f"framefarm: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("framefarm: interrupted", file=sys.stderr)
        return 130


def _worker(args: argparse.Namespace) -> int:
    from framefarm.runners.temporal.connect import resolve_target
    from framefarm.runners.temporal.worker import WorkerSettings
    from framefarm.runners.temporal.worker import main as worker_main

    target = resolve_target(address=args.temporal_address, namespace=args.temporal_namespace)
    queue = config.resolve(args.task_queue, config.TASK_QUEUE, config.DEFAULT_TASK_QUEUE)
    return worker_main(target, WorkerSettings(task_queue=str(queue), processes=args.workers or 0,
                                              identity=args.identity or ""))


def _joblog_url(args: argparse.Namespace) -> str:
    return str(config.resolve(args.joblog, config.JOBLOG, config.default_joblog_url()))


_MODES = {"stateful": "(its update function keeps state: each worker replays the frames "
                       "before its chunk)",
          "stateless": "(each frame depends only on its own update)"}


def _status(args: argparse.Namespace) -> int:
    from framefarm.report import load_report

    joblog = existing_joblog(_joblog_url(args))
    report = load_report(joblog, args.run_id) if joblog is not None else None
    if report is None:
        raise UserError(f"run {args.run_id!r} is not in the job log {_joblog_url(args)}: "
                        "see `framefarm runs` for the runs it has")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"run {report['run_id']}: {report['status']}  {report['frames_done']}/"
          f"{report['total_frames']} frames  {report['chunks']} chunks  {report['output']}")
    if report.get("sketch_mode"):  # what an animation needs of its workers
        print(f"sketch: {report['sketch_mode']}  "
              + _MODES.get(report["sketch_mode"], ""))
    engine = report.get("engine")
    if engine:  # the workflow engine's own view (a Step Functions execution)
        print(f"execution {engine['status']}  {engine['execution']}  {engine['url']}")
        if engine.get("error"):
            print("    " + engine["error"].splitlines()[0])
    print(f"{'job':<14}{'attempt':>8}  {'status':<10}{'frames':>7}  {'started':<25}{'stopped':<25}")
    for job in report["jobs"]:
        print(f"{job['job']:<14}{job['attempt']:>8}  {job['status']:<10}{job['frames']:>7}  "
              f"{job['started_at']:<25}{job['stopped_at']:<25}")
        if job["error"]:
            print("    " + job["error"].splitlines()[0])
    return 0


def _runs(args: argparse.Namespace) -> int:
    from framefarm.lifecycle import with_lost
    from framefarm.report import overall_status

    joblog = existing_joblog(_joblog_url(args))
    if joblog is None:  # no job log file yet, so no runs
        if args.json:
            print("[]")
        return 0
    rows = []
    for run in joblog.runs():
        latest = with_lost(joblog.latest_jobs(run.run_id))
        rows.append({"run_id": run.run_id,
                     "status": overall_status(run, latest,
                                              driven=joblog.lease(run.run_id) is not None),
                     "runner": run.runner or "local",
                     "created_at": run.created_at, "total_frames": run.plan.get("total_frames"),
                     "sketch": run.plan.get("sketch", ""), "output": run.output})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['run_id']:<28}{row['status']:<10}{row['total_frames'] or '':>7} frames  "
              f"{row['created_at']:<25}{row['output']}")
    return 0


def _trace(args: argparse.Namespace) -> int:
    from framefarm.storage import open_storage
    from framefarm.trace_report import build_report, render_text
    from framefarm.trace_store import load_spans

    url = str(config.resolve(args.storage, config.STORAGE, config.default_storage_url()))
    spans = load_spans(open_storage(url), args.run_id)
    if not spans:
        raise UserError(f"run {args.run_id!r} has no stored spans in storage {url}: give the storage it "
                        f"ran with (--storage or {config.STORAGE}); see `framefarm runs` for the runs")
    report = build_report(spans, run_id=args.run_id)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report, width=args.width), end="")
    return 0
