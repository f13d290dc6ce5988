"""A moto server, in a process of its own, that answers one request at a time.

DynamoDB applies each conditional write atomically: of two racers that put the same new item,
exactly one passes `attribute_not_exists`. moto's threaded server checks and writes without a
lock, so on it both racers can pass, and a race test fails now and then for a reason real
DynamoDB does not have. Here every request runs under one lock (connections are still accepted
by many threads, so a client that keeps its connection open holds nobody up).

The server can also answer DynamoDB requests with an AWS error, as the real service does when
it throttles: POST `/_serial/fault` with {"code", "status", "times"} (times 0 stops it);
GET `/_serial/fault` says how many requests were answered with it. The fault is on the wire, so
botocore parses it and retries it exactly as it would DynamoDB's own.

`python tests/contract/moto_serial.py` prints `port N` once it serves on 127.0.0.1 and stops
when its standard input closes (the test process that started it ended, however it ended).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FAULT_PATH = "/_serial/fault"


class SerialApp:
    """WSGI: `app`, one request at a time, with an AWS error injected on request."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.fault: dict[str, Any] = {"code": "", "status": 400, "times": 0}
        self.faulted = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == FAULT_PATH:
            return self._control(environ, start_response)
        with self.lock:
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if self.fault["times"] > 0 and target.startswith("DynamoDB_"):
                self.fault["times"] -= 1
                self.faulted += 1
                body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{self.fault['code']}",
                                   "message": "injected by tests/contract/moto_serial.py"}).encode()
                start_response(f"{self.fault['status']} Injected",
                               [("Content-Type", "application/x-amz-json-1.0"),
                                ("Content-Length", str(len(body)))])
                return [body]
            # The whole answer is made under the lock: moto does its work while it is iterated.
            return [b"".join(self.app(environ, start_response))]

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            if environ["REQUEST_METHOD"] == "POST":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                self.fault = {"code": "", "status": 400, "times": 0,
                              **json.loads(environ["wsgi.input"].read(size) or b"{}")}
                self.faulted = 0
            body = json.dumps({**self.fault, "faulted": self.faulted}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]


class SerialMoto:
    """A running serial moto server: its URL, and its fault switch."""

    def __init__(self, url: str) -> None:
        self.url = url

    def fault(self, code: str, *, status: int = 400, times: int = 1_000_000) -> None:
        """Answer the next `times` DynamoDB requests with AWS error `code` (HTTP `status`)."""
        self._post({"code": code, "status": status, "times": times})

    def clear(self) -> None:
        """Answer every request normally again."""
        self._post({"times": 0})

    def faulted(self) -> int:
        """How many requests were answered with the fault since it was set."""
        with urllib.request.urlopen(self.url + FAULT_PATH, timeout=10) as reply:
            return int(json.load(reply)["faulted"])

    def _post(self, data: dict[str, Any]) -> None:
        request = urllib.request.Request(self.url + FAULT_PATH, data=json.dumps(data).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()


@contextmanager
def serial_moto() -> Iterator[SerialMoto]:
    """Start the server in a new process on a free port of 127.0.0.1; stop it afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    process = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("port "), f"the serial moto server did not start: {line!r}"
        yield SerialMoto(f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = SerialApp(DomainDispatcherApplication(create_backend_app))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)

    def stop_with_parent() -> None:
        sys.stdin.read()  # returns when the parent's end of the pipe closes
        os._exit(0)

    threading.Thread(target=stop_with_parent, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
