"""Every environment variable framefarm reads, in one place; an explicit value beats the
environment, which beats the default.

The job contract (see README): ``JOB_TYPE``, ``TOTAL_FRAMES``, ``FRAMES_PER_RENDER_JOB``,
``AWS_BATCH_JOB_ARRAY_INDEX``, ``AWS_BATCH_JOB_ID``, ``AWS_BATCH_JOB_ATTEMPT``,
``FRAMEFARM_RUN_ID``, ``FRAMEFARM_SKETCH``, ``FRAMEFARM_STORAGE``, ``FRAMEFARM_JOBLOG``,
``FRAMEFARM_JOBLOG_TTL_DAYS``,
``FRAMEFARM_FPS``, ``FRAMEFARM_WIDTH``, ``FRAMEFARM_HEIGHT``, ``FRAMEFARM_CRF``,
``FRAMEFARM_PRESET``, ``FRAMEFARM_KEEP_FRAMES``, ``FRAMEFARM_OUTPUT``,
``FRAMEFARM_PARALLELISM``, ``FRAMEFARM_JOB_START_SECONDS``, ``FRAMEFARM_MAX_CHUNKS``,
``FRAMEFARM_SIZE_BUDGET``,
``FRAMEFARM_JOB_CPUS``,
``FRAMEFARM_FRAME_TIMEOUT``, ``FRAMEFARM_CHUNKS``, ``TRACEPARENT``,
``_X_AMZN_TRACE_ID``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

JOB_TYPE = "JOB_TYPE"
TOTAL_FRAMES = "TOTAL_FRAMES"
FRAMES_PER_RENDER_JOB = "FRAMES_PER_RENDER_JOB"
ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"
BATCH_JOB_ID = "AWS_BATCH_JOB_ID"
BATCH_JOB_ATTEMPT = "AWS_BATCH_JOB_ATTEMPT"
RUN_ID = "FRAMEFARM_RUN_ID"
SKETCH = "FRAMEFARM_SKETCH"
KIND = "FRAMEFARM_KIND"
ASSETS = "FRAMEFARM_ASSETS"
"""Files and folders the sketch brings, comma-separated, relative to its folder (framefarm/assets.py)."""
"""The kind of creative code the sketch is (framefarm/kinds/: sketch, shader); unset: its file
suffix says."""
STORAGE = "FRAMEFARM_STORAGE"
JOBLOG = "FRAMEFARM_JOBLOG"
JOBLOG_TTL_DAYS = "FRAMEFARM_JOBLOG_TTL_DAYS"
FPS = "FRAMEFARM_FPS"
WIDTH = "FRAMEFARM_WIDTH"
HEIGHT = "FRAMEFARM_HEIGHT"
CRF = "FRAMEFARM_CRF"
PRESET = "FRAMEFARM_PRESET"
KEEP_FRAMES = "FRAMEFARM_KEEP_FRAMES"
OUTPUT = "FRAMEFARM_OUTPUT"
JOB_QUEUE = "FRAMEFARM_JOB_QUEUE"
PLAN_JOB_DEFINITION = "FRAMEFARM_PLAN_JOB_DEFINITION"
RENDER_JOB_DEFINITION = "FRAMEFARM_RENDER_JOB_DEFINITION"
ENCODE_JOB_DEFINITION = "FRAMEFARM_ENCODE_JOB_DEFINITION"
PARALLELISM = "FRAMEFARM_PARALLELISM"
JOB_START_SECONDS = "FRAMEFARM_JOB_START_SECONDS"
MAX_CHUNKS = "FRAMEFARM_MAX_CHUNKS"
SIZE_BUDGET = "FRAMEFARM_SIZE_BUDGET"
"""Percent the video may grow by (estimated) so that auto-sized chunks can be shorter than x264's
key-frame interval; unset or 0: never (steps/_sizing.py)."""
"""The most chunks (render jobs) one run may have on its runner, which sets it (AWS Batch:
10,000, its array limit); unset or 0: no limit of the runner's own."""
JOB_CPUS = "FRAMEFARM_JOB_CPUS"
FRAME_TIMEOUT = "FRAMEFARM_FRAME_TIMEOUT"
"""Seconds one frame may take before its render job fails (and is retried); 0: no limit."""
CHUNKS = "FRAMEFARM_CHUNKS"
"""Chunk indexes, comma-separated, with ranges FIRST-LAST, that a render array job renders: child
i renders the i-th (a resumed run renders only its missing chunks; a slice of a run above 10,000
chunks on Step Functions, e.g. 10000-19999). Unset: child i renders chunk i."""
EXECUTION = "FRAMEFARM_EXECUTION"
"""The AWS Step Functions execution that runs this plan job: plan and record the slices to render,
submit nothing (the state machine submits the render and encode jobs)."""
STATE_MACHINE = "FRAMEFARM_STATE_MACHINE"
"""The state machine `--runner stepfunctions` starts (the stack's StateMachine output)."""
TRACEPARENT = "TRACEPARENT"
XRAY_TRACE_ID = "_X_AMZN_TRACE_ID"

# OpenTelemetry's standard variables, as framefarm's entry points read them (see _otel.py).
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_TIMEOUT = "OTEL_EXPORTER_OTLP_TIMEOUT"
OTEL_TRACES_TIMEOUT = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
TRACING_SETTINGS = (
    OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER, OTEL_ENDPOINT, OTEL_TRACES_ENDPOINT, OTEL_PROTOCOL,
    OTEL_TRACES_PROTOCOL, OTEL_TIMEOUT, OTEL_TRACES_TIMEOUT, OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES,
)

# Temporal (`--runner temporal`, `framefarm worker`): the SDK's own variables, read through its
# environment configuration (temporalio.envconfig, which also reads TLS and API-key settings),
# and framefarm's.
TEMPORAL_ADDRESS = "TEMPORAL_ADDRESS"
TEMPORAL_NAMESPACE = "TEMPORAL_NAMESPACE"
TASK_QUEUE = "FRAMEFARM_TASK_QUEUE"
TEMPORAL_UI = "FRAMEFARM_TEMPORAL_UI"
DEFAULT_TASK_QUEUE = "framefarm"

# Every variable of the job contract, in the README's order.
CONTRACT = (
    JOB_TYPE, TOTAL_FRAMES, FRAMES_PER_RENDER_JOB, ARRAY_INDEX, BATCH_JOB_ID, BATCH_JOB_ATTEMPT,
    RUN_ID, SKETCH, KIND, ASSETS, STORAGE, JOBLOG, JOBLOG_TTL_DAYS, FPS, WIDTH, HEIGHT, CRF, PRESET,
    KEEP_FRAMES, OUTPUT,
    PARALLELISM, JOB_START_SECONDS, MAX_CHUNKS, SIZE_BUDGET, JOB_CPUS, FRAME_TIMEOUT, CHUNKS, JOB_QUEUE,
    PLAN_JOB_DEFINITION, RENDER_JOB_DEFINITION, ENCODE_JOB_DEFINITION, EXECUTION,
    TRACEPARENT, XRAY_TRACE_ID,
)

DATA_DIR_NAME = "framefarm-data"
DEFAULT_CRF = 18
DEFAULT_PRESET = "fast"
DEFAULT_FPS = "30"
DEFAULT_WIDTH = 1280
DEFAULT_HEIGHT = 720
DEFAULT_FRAMES = 120
DEFAULT_FRAME_TIMEOUT = 600.0
"""Ten minutes a frame: far above any sketch's frame, short of a run hanging for ever."""
MAX_ATTEMPTS = 3
"""Attempts per job on every runner, as the Batch job definitions' RetryStrategy."""


def default_data_dir(cwd: Path | None = None) -> Path:
    """Where local runs keep storage and the job log: ./framefarm-data."""
    return (cwd or Path.cwd()) / DATA_DIR_NAME


def default_storage_url(cwd: Path | None = None) -> str:
    """file:// storage under ./framefarm-data."""
    return default_data_dir(cwd).as_uri()


def default_joblog_url(cwd: Path | None = None) -> str:
    """sqlite:/// job log under ./framefarm-data (an absolute path: four slashes)."""
    return "sqlite:///" + str(default_data_dir(cwd) / "joblog.sqlite3")


def resolve(explicit: str | None, name: str, default: str | None = None,
            environ: Mapping[str, str] | None = None) -> str | None:
    """`explicit` if given, else the environment variable `name`, else `default`."""
    if explicit is not None and explicit != "":
        return explicit
    env = os.environ if environ is None else environ
    value = env.get(name, "")
    return value if value != "" else default
