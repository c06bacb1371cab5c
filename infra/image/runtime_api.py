"""A Lambda Runtime API on 127.0.0.1 that feeds events to the image's real entry point.

Standard library only: it runs inside the image (copied or mounted in), where it starts
`python3 -m awslambdaric <handler>` with AWS_LAMBDA_RUNTIME_API pointing at itself, as the
Lambda service does. awslambdaric fetches each event from
GET /2018-06-01/runtime/invocation/next and posts the handler's answer to
/2018-06-01/runtime/invocation/<id>/response (or .../error, or /runtime/init/error).

    python3 runtime_api.py PLAN.json > RESULTS.json

PLAN: {"runs": [{"name": ..., "handler": "chalicelib.lambdas.handlers.api",
                 "event": {...}, "warm": 3, "env": {...}, "clear": ["/tmp/x"],
                 "log": "/path/of/the/function/output"}, ...]}
Each run is a fresh process (a cold start; the folders in "clear" removed first, as a new
container starts with an empty /tmp): `cold_s` is process start to the first answer
received; then the same event `warm` more times in that process, `warm_s` the time from
handing the event out to its answer. RESULTS: one entry per run with the first answer
(`response`, parsed JSON), `error` if the handler failed, and the timings.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class Runtime:
    """The service side of one function instance: a queue of events, their answers."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.answers: queue.Queue = queue.Queue()
        self.handed: dict[str, float] = {}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without TCP_NODELAY the second waits
            # for the client's delayed ACK (~40 ms), a stall AWS's Runtime API does not add
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # quiet
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != PREFIX + "/invocation/next":
                    return self._reply(404)
                event = runtime.events.get()
                if event is None:  # shutting down: never answer
                    time.sleep(3600)
                rid = str(uuid.uuid4())
                runtime.handed[rid] = time.perf_counter()
                self._reply(200, json.dumps(event).encode(), {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": rid,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 900_000),
                    "Lambda-Runtime-Invoked-Function-Arn":
                        "arn:aws:lambda:us-east-1:000000000000:function:spherex-image-test",
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                })

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                now = time.perf_counter()
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts[:2] == ["init", "error"]:
                    runtime.answers.put(("init_error", None, body, now))
                elif len(parts) == 3 and parts[0] == "invocation" and \
                        parts[2] in ("response", "error"):
                    runtime.answers.put((parts[2], parts[1], body, now))
                else:
                    return self._reply(404)
                self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})

        return Handler


def _read_chunked(stream) -> bytes:
    out = bytearray()
    while True:
        size = int(stream.readline().strip().split(b";")[0], 16)
        if size == 0:
            stream.readline()
            return bytes(out)
        out += stream.read(size)
        stream.readline()


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) the process has used: on a shared, loaded machine this
    moves far less than wall time, so it is reported beside it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _decode(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def run_one(spec: dict, timeout: float = 600.0) -> dict:
    """One cold process for spec["handler"], its first answer and `warm` warm ones."""
    runtime = Runtime()
    server = ThreadingHTTPServer(("127.0.0.1", 0), runtime.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, **spec.get("env", {}),
           "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_port}"}
    warm = int(spec.get("warm", 0))
    for _ in range(1 + warm):
        runtime.events.put(spec["event"])
    for path in spec.get("clear", []):  # a new container's /tmp is empty
        shutil.rmtree(path, ignore_errors=True)
    log = open(spec.get("log", os.devnull), "ab")  # noqa: SIM115
    start = time.perf_counter()
    proc = subprocess.Popen(client_command(spec["handler"]), env=env, stdout=log, stderr=log)
    out: dict = {"name": spec.get("name", spec["handler"]), "handler": spec["handler"]}
    try:
        warm_s = []
        for i in range(1 + warm):
            kind, rid, body, at = runtime.answers.get(timeout=timeout)
            if i == 0:
                out["cold_s"] = at - start
                out["cold_cpu_s"] = _cpu_seconds(proc.pid)
                out["response" if kind == "response" else "error"] = _decode(body)
            else:
                warm_s.append(at - runtime.handed[rid])
            if kind != "response":
                out.setdefault("error", _decode(body))
                break
        out["warm_s"] = warm_s
    except queue.Empty:
        out["error"] = f"no answer within {timeout} s (exit code {proc.poll()})"
    finally:
        runtime.events.put(None)
        proc.kill()
        proc.wait()
        server.shutdown()
        log.close()
    return out


def has_ric() -> bool:
    import importlib.util

    return importlib.util.find_spec("awslambdaric") is not None


def client_command(handler: str) -> list[str]:
    """The function process: awslambdaric (the image's entry point), or where it is not
    installed (a development machine) the loop below, which does what it does."""
    if has_ric():
        return [sys.executable, "-m", "awslambdaric", handler]
    return [sys.executable, os.path.abspath(__file__), "--client", handler]


def client(handler: str) -> None:
    """A minimal runtime interface client: next event, call the handler, post the answer."""
    import importlib
    import traceback
    import urllib.request

    api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + PREFIX
    mod, name = handler.rsplit(".", 1)
    fn = getattr(importlib.import_module(mod), name)
    while True:
        with urllib.request.urlopen(api + "/invocation/next") as r:
            rid, event = r.headers["Lambda-Runtime-Aws-Request-Id"], json.loads(r.read())
        try:
            url, body = f"{api}/invocation/{rid}/response", json.dumps(fn(event, None))
        except Exception as e:  # noqa: BLE001
            url = f"{api}/invocation/{rid}/error"
            body = json.dumps({"errorType": type(e).__name__, "errorMessage": str(e),
                               "stackTrace": traceback.format_exc().splitlines()})
        urllib.request.urlopen(urllib.request.Request(url, body.encode(), method="POST"))


def main() -> None:
    if sys.argv[1] == "--client":
        return client(sys.argv[2])
    plan = json.load(open(sys.argv[1]))  # noqa: SIM115
    results = [run_one(spec) for spec in plan["runs"]]
    json.dump({"python": sys.version.split()[0], "client": "awslambdaric" if has_ric()
               else "stand-in (awslambdaric not installed)", "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
