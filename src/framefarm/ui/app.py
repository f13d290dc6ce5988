"""The web view's Starlette app: three pages (runs, a run, a chunk), the JSON API under /api/
that they use, the video in byte ranges, the preview, and live events.

Every request must name a known Host (a page of another site that resolves its name to this
machine reads nothing: DNS rebinding); a request that changes anything is a POST with the
start-up token in X-Framefarm-Token and, from a browser, this server's own Origin. Run ids from
URLs are checked as the CLI checks them (limits.check_run_id) and storage keys are built from
them, never taken from a URL, so no request reaches outside the storage root. A job log or
storage that fails gives one line (503 JSON; the pages show it in a banner), never a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from framefarm import limits
from framefarm._cli_checks import existing_joblog
from framefarm.errors import FramefarmError, UserError
from framefarm.joblog import JobLog
from framefarm.lifecycle import with_lost
from framefarm.model import TERMINAL_STATUSES, RunRecord
from framefarm.storage import Storage, open_storage
from framefarm.trace_store import load_spans
from framefarm.tracing import trace_key, trace_prefix
from framefarm.ui import _actions, _views
from framefarm.ui._media import MediaCache, Unsatisfiable, byte_range

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_HEADER = "X-Framefarm-Token"
PING_SECONDS = 15.0
"""A comment line on a quiet event stream this often, so proxies and browsers keep it open."""
REFRESH_SECONDS = 5.0
"""A running run's page gets its progress (fps, ETA) at least this often."""
_FAULTS = (FramefarmError, sqlite3.Error, OSError, ConnectionError, TimeoutError)
"""Failures of the job log or storage: the page says them in one line (503)."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one web view serves, and to whom."""

    storage_url: str
    joblog_url: str
    token: str
    hosts: frozenset[str] | None = None
    """The Host headers accepted (lower case, with the port); None: any (a public bind)."""
    poll_seconds: float = 1.0
    """How often an event stream reads the job log for changes."""
    cache: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "framefarm-ui")
    """Where videos of remote storage are copied and resume commands write their output."""


class Farm:
    """The job log and storage the view reads, opened once (the job log when it exists), and
    what is kept between requests (videos, previews, spans)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage: Storage = open_storage(settings.storage_url)
        self.media = MediaCache(self.storage, settings.cache / "videos")
        self.streams = 0
        """Event streams open now (a client that goes away closes its own)."""
        self._joblog: JobLog | None = None
        self._lock = threading.Lock()
        self._spans: dict[str, tuple[object, list[dict[str, Any]]]] = {}

    def joblog(self) -> JobLog | None:
        """The job log, or None while its SQLite file does not exist (no run yet)."""
        with self._lock:
            if self._joblog is None:
                self._joblog = existing_joblog(self.settings.joblog_url)
            return self._joblog

    def run(self, run_id: str) -> tuple[JobLog, RunRecord | None]:
        """The job log and the run's record (None for a run known only by its jobs); 404
        when the job log has not heard of the run."""
        joblog = self.joblog()
        run = joblog.get_run(run_id) if joblog is not None else None
        if joblog is None or (run is None and not joblog.jobs(run_id)):
            raise HTTPException(404, f"run {run_id!r} is not in the job log {self.settings.joblog_url}")
        return joblog, run

    def recorded(self, run_id: str) -> tuple[JobLog, RunRecord]:
        """The job log and the run's record, which an action needs; 404 without one."""
        joblog, run = self.run(run_id)
        if run is None:
            raise HTTPException(404, f"run {run_id!r} has jobs in the job log but no record of "
                                     "its own: nothing to cancel, resume or delete")
        return joblog, run

    def spans(self, run_id: str) -> list[dict[str, Any]]:
        """The run's stored spans, read again only when its trace objects change."""
        stamp = (tuple(self.storage.list(trace_prefix(run_id))), self.storage.exists(trace_key(run_id)))
        with self._lock:
            kept = self._spans.get(run_id)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        spans = load_spans(self.storage, run_id)
        with self._lock:
            self._spans[run_id] = (stamp, spans)
        return spans

    def fingerprint(self, run_id: str) -> str:
        """Changes whenever the run's record, any attempt or its driver does."""
        joblog = self.joblog()
        if joblog is None:
            return ""
        run = joblog.get_run(run_id)
        digest = hashlib.sha256(json.dumps(run.to_dict() if run else None, sort_keys=True).encode())
        for r in with_lost(joblog.jobs(run_id)):
            digest.update(f"{r.job}|{r.attempt}|{r.status}|{r.frames}|{r.heartbeat_at}|"
                          f"{r.stopped_at}\n".encode())
        digest.update(b"driven" if joblog.lease(run_id) is not None else b"-")
        return digest.hexdigest()

    def forget(self, run_id: str) -> None:
        """Drop what is kept of the run (its data was deleted)."""
        self.media.forget(run_id)
        with self._lock:
            self._spans.pop(run_id, None)


# -- guards ---------------------------------------------------------------------------------------

class Guard:
    """Refuses a request for an unknown Host, and a state change without the token, from
    another origin or by a method that is not POST."""

    def __init__(self, app: ASGIApp, *, token: str, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        refusal = ""
        if self.hosts is not None and host not in self.hosts:
            refusal = f"unknown Host {host!r}: open the address framefarm ui printed"
        elif scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            site = headers.get("sec-fetch-site")
            if (origin is not None and origin.lower() != f"http://{host}") or \
                    site not in (None, "same-origin", "none"):
                refusal = "cross-origin request refused: use the page framefarm ui serves"
            elif not hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.token.encode()):
                refusal = f"missing or wrong {TOKEN_HEADER}: use the token framefarm ui printed"
        if refusal:
            await JSONResponse({"error": refusal}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _run_id(request: Request) -> str:
    """The run id in the URL, checked as the CLI checks it; 404 for anything else."""
    text = str(request.path_params.get("run_id", ""))
    try:
        return limits.check_run_id(text)
    except UserError:
        raise HTTPException(404, "no such run") from None


def _number(request: Request, name: str, default: int, *, most: int) -> int:
    text = request.query_params.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise HTTPException(400, f"{name} must be a whole number, 0 or more (got {text!r})")
    return min(int(text), most)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _json(call: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """An API endpoint: its dict as JSON; a failing job log or storage as 503 with one line;
    a fault of framefarm's own as 500 with one line (its traceback goes to the server's log)."""

    async def endpoint(request: Request) -> Response:
        try:
            found = await run_in_threadpool(call, request)
        except HTTPException as exc:
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        except _FAULTS as exc:
            return JSONResponse({"error": _one_line(exc)}, status_code=503)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            return JSONResponse({"error": f"internal error: {_one_line(exc)}"}, status_code=500)
        if isinstance(found, Response):
            return found
        return JSONResponse(found)

    return endpoint


# -- the app ------------------------------------------------------------------------------------

def create_app(settings: Settings) -> ASGIApp:
    """The web view over `settings`' storage and job log, behind its Guard."""
    farm = Farm(settings)

    def page(name: str, request: Request, **values: str) -> Response:
        banner = ""
        try:
            joblog = farm.joblog()
            if joblog is not None:
                joblog.runs()
        except Exception as exc:  # the page still loads, and says what is wrong
            banner = f"The job log cannot be read: {_one_line(exc)}"
        text = (STATIC / name).read_text()
        for key, value in {"token": settings.token, "banner": banner,
                           "joblog": settings.joblog_url, "storage": settings.storage_url,
                           **values}.items():
            text = text.replace("{{" + key + "}}", html.escape(value))
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    async def runs_html(request: Request) -> Response:
        return await run_in_threadpool(page, "runs.html", request)

    async def run_html(request: Request) -> Response:
        run_id = _run_id(request)
        return await run_in_threadpool(page, "run.html", request, run_id=run_id)

    async def chunk_html(request: Request) -> Response:
        run_id = _run_id(request)
        index = str(request.path_params["index"])
        return await run_in_threadpool(page, "chunk.html", request, run_id=run_id, index=index)

    def api_runs(request: Request) -> dict[str, Any]:
        status = request.query_params.get("status", "").upper()
        if status and status not in (*TERMINAL_STATUSES, "RUNNING", "PENDING", "SUBMITTED",
                                     "RUNNABLE"):
            raise HTTPException(400, f"unknown status {status!r}: use RUNNING, SUCCEEDED, FAILED "
                                     "or CANCELLED")
        return _views.runs_page(farm.joblog(), farm.storage, status=status,
                                offset=_number(request, "offset", 0, most=10**9),
                                limit=max(1, _number(request, "limit", 25, most=200)))

    def api_run(request: Request) -> dict[str, Any]:
        run_id = _run_id(request)
        joblog, _run = farm.run(run_id)
        report = _views.run_report(joblog, farm.storage, run_id)
        if report is None:
            raise HTTPException(404, f"run {run_id!r} is not in the job log")
        report.update(_urls(run_id, report))
        if request.query_params.get("jobs") == "0":  # the page: its jobs come a page at a time
            del report["jobs"]
        return report

    def api_jobs(request: Request) -> dict[str, Any]:
        run_id = _run_id(request)
        joblog, _run = farm.run(run_id)
        report = _views.run_report(joblog, farm.storage, run_id) or {"jobs": []}
        return _views.jobs_page(report["jobs"], offset=_number(request, "offset", 0, most=10**9),
                                limit=max(1, _number(request, "limit", 100, most=1000)),
                                status=request.query_params.get("status", "").upper(),
                                kind=request.query_params.get("kind", ""))

    def api_chunk(request: Request) -> dict[str, Any]:
        run_id = _run_id(request)
        joblog, _run = farm.run(run_id)
        index = int(request.path_params["index"])
        found = _views.chunk_report(joblog, farm.storage, run_id, index, farm.spans(run_id))
        if found is None:
            raise HTTPException(404, f"run {run_id} has no chunk {index}")
        found["preview_url"] = f"/api/runs/{run_id}/preview?chunk={index}"
        return found

    def api_trace(request: Request) -> dict[str, Any]:
        run_id = _run_id(request)
        farm.run(run_id)
        spans = farm.spans(run_id)
        if not spans:
            return {"run_id": run_id, "spans": 0, "jobs": [], "folded": None}
        return _views.trace_view(spans, run_id)

    def api_preview(request: Request) -> Response:
        run_id = _run_id(request)
        joblog, _run = farm.run(run_id)
        chunk = request.query_params.get("chunk", "")
        sha = ""
        if chunk.isdigit():
            index = int(chunk)
        else:
            report = _views.run_report(joblog, farm.storage, run_id) or {}
            newest = report.get("preview_chunk")
            if not newest:
                raise HTTPException(404, f"run {run_id} has no finished chunk yet")
            index, sha = int(newest["index"]), str(newest["sha256"])
        picture = farm.media.preview(run_id, index, sha or request.query_params.get("v", ""))
        if picture is None:
            raise HTTPException(404, f"run {run_id} has no stored segment for chunk {index}")
        return Response(picture, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    def api_video(request: Request) -> Response:
        run_id = _run_id(request)
        farm.run(run_id)
        path = farm.media.video(run_id)
        if path is None:
            raise HTTPException(404, f"run {run_id} has no video yet")
        return _ranged(path, request)

    def action(name: str) -> Callable[[Request], Any]:
        def act(request: Request) -> Response:
            run_id = _run_id(request)
            joblog, run = farm.recorded(run_id)
            if name == "cancel":
                outcome = _actions.cancel(joblog, run)
            elif name == "resume":
                outcome = _actions.resume(run, storage_url=farm.storage.url,
                                          joblog_url=joblog.url, logs=settings.cache / "logs")
            else:
                confirm = request.query_params.get("confirm", "")
                if confirm != run_id:
                    raise HTTPException(400, f"deleting run {run_id}'s data needs ?confirm={run_id}")
                outcome = _actions.delete(joblog, farm.storage, run)
                if outcome.status == 200:
                    farm.forget(run_id)
            return JSONResponse({"message": outcome.message, **(outcome.details or {})},
                                status_code=outcome.status)
        return act

    async def events(request: Request) -> Response:
        run_id = _run_id(request)
        await run_in_threadpool(farm.run, run_id)  # 404 before a stream starts
        return StreamingResponse(_stream(farm, run_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    routes = [
        Route("/", runs_html),
        Route("/runs/{run_id}", run_html),
        Route("/runs/{run_id}/chunks/{index:int}", chunk_html),
        Route("/api/runs", _json(api_runs)),
        Route("/api/runs/{run_id}", _json(api_run)),
        Route("/api/runs/{run_id}/jobs", _json(api_jobs)),
        Route("/api/runs/{run_id}/chunks/{index:int}", _json(api_chunk)),
        Route("/api/runs/{run_id}/trace", _json(api_trace)),
        Route("/api/runs/{run_id}/preview", _json(api_preview)),
        Route("/api/runs/{run_id}/video", _json(api_video), methods=["GET", "HEAD"]),
        Route("/api/runs/{run_id}/events", events),
        *(Route(f"/api/runs/{{run_id}}/{name}", _json(action(name)), methods=["POST"])
          for name in ("cancel", "resume", "delete")),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.farm = farm
    return Guard(app, token=settings.token, hosts=settings.hosts)


def _urls(run_id: str, report: Mapping[str, Any]) -> dict[str, str | None]:
    preview = report.get("preview_chunk")
    return {"video_url": f"/api/runs/{run_id}/video" if report.get("video_stored") else None,
            "preview_url": f"/api/runs/{run_id}/preview?chunk={preview['index']}&v="
                           f"{str(preview['sha256'])[:16]}" if preview else None}


def _ranged(path: Path, request: Request) -> Response:
    """The file, or the byte range its Range header asks for (206), seekable by a <video>."""
    size = path.stat().st_size
    headers = {"Accept-Ranges": "bytes", "Content-Type": "video/mp4", "Cache-Control": "no-cache"}
    try:
        wanted = byte_range(request.headers.get("range"), size)
    except Unsatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    first, last = wanted if wanted is not None else (0, size - 1)
    length = max(0, last - first + 1)
    headers["Content-Length"] = str(length)
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return StreamingResponse(_read(path, first, length), status_code=status, headers=headers)


def _read(path: Path, first: int, length: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(first)
        while length > 0:
            data = f.read(min(piece, length))
            if not data:
                return
            length -= len(data)
            yield data


async def _stream(farm: Farm, run_id: str) -> AsyncIterator[str]:
    """Server-sent events: `run` with the run's page data whenever its records change (and
    every REFRESH_SECONDS while it runs); `failure` with one line when the job log fails; a
    comment now and then. Ends when the client goes away (Starlette cancels it)."""
    farm.streams += 1
    try:
        yield "retry: 2000\n\n"
        seen, sent_at, pinged = "", 0.0, time.monotonic()
        while True:
            try:
                now_seen = await run_in_threadpool(farm.fingerprint, run_id)
                due = time.monotonic() - sent_at > REFRESH_SECONDS
                if now_seen != seen or due:
                    report = await run_in_threadpool(_page_report, farm, run_id)
                    running = report is not None and report["status"] not in TERMINAL_STATUSES
                    if now_seen != seen or running:
                        yield f"event: run\ndata: {json.dumps(report)}\n\n"
                        pinged = time.monotonic()
                    seen, sent_at = now_seen, time.monotonic()
            except _FAULTS as exc:
                yield f"event: failure\ndata: {json.dumps({'error': _one_line(exc)})}\n\n"
            if time.monotonic() - pinged > PING_SECONDS:
                yield ": ping\n\n"
                pinged = time.monotonic()
            await asyncio.sleep(farm.settings.poll_seconds)
    finally:
        farm.streams -= 1


def _page_report(farm: Farm, run_id: str) -> dict[str, Any] | None:
    joblog = farm.joblog()
    report = _views.run_report(joblog, farm.storage, run_id) if joblog is not None else None
    if report is not None:
        report.update(_urls(run_id, report))
        del report["jobs"]
    return report
