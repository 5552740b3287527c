"""A rate-limited HTTP server for the end-to-end tests of werkpool.httpx, and its runner.

:data:`app` is a plain ASGI callable (no framework) that enforces a strict rate per *bucket*, a
query parameter, so that each test counts only its own requests: a request that arrives less
than ``1/rate`` seconds after the previous *accepted* request of its bucket gets ``429`` with
``Retry-After: 1`` (whole seconds, as HTTP requires); any other gets ``200``. ``/stats?bucket=``
returns what the server saw, as JSON. :class:`HttpServer` serves it with uvicorn in a subprocess
on a free loopback port, and stops it by its own pid.

The server is one process with one event loop (uvicorn's default), so its counts are consistent:
the decision to accept a request and the update of its bucket happen with no await between them.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

__all__ = ["DEFAULT_RATE", "HttpServer", "app"]

#: The server's limit, in accepted requests per second, when the request names no ``rate``.
DEFAULT_RATE = 20.0

#: The longest the server may take to answer after it starts.
START_TIMEOUT = 15.0


# -- the ASGI app ---------------------------------------------------------------------------------


@dataclass
class Bucket:
    """What the server saw of one bucket's requests."""

    accepted: int = 0
    refused: int = 0
    #: Requests in progress now, and the most at once.
    running: int = 0
    max_concurrent: int = 0
    #: When the last accepted request arrived (time.monotonic).
    last_accepted: float = -math.inf

    def stats(self) -> dict[str, int]:
        counts = asdict(self)
        del counts["last_accepted"], counts["running"]
        return counts


BUCKETS: dict[str, Bucket] = {}

Send = Any
Receive = Any


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:  # ends with the server's shutdown message
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """``GET /<anything>?bucket=B[&rate=R][&delay=S]``: 200 (after *delay* seconds) or 429;
    ``GET /stats?bucket=B``: ``{"accepted": .., "refused": .., "max_concurrent": ..}``."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode("latin-1"))
    bucket = BUCKETS.setdefault(query.get("bucket", ["default"])[0], Bucket())
    if scope["path"] == "/stats":
        await _respond(send, 200, json.dumps(bucket.stats()).encode(), b"application/json")
        return
    rate = float(query.get("rate", [DEFAULT_RATE])[0])
    delay = float(query.get("delay", [0])[0])
    now = time.monotonic()
    bucket.running += 1
    bucket.max_concurrent = max(bucket.max_concurrent, bucket.running)
    try:
        if now - bucket.last_accepted < 1 / rate:
            bucket.refused += 1
            await _respond(send, 429, b"too many requests", headers=((b"retry-after", b"1"),))
            return
        bucket.last_accepted = now
        bucket.accepted += 1
        if delay:
            await asyncio.sleep(delay)  # the server runs on uvicorn's asyncio loop
        await _respond(send, 200, b"ok")
    finally:
        bucket.running -= 1


# -- running it -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HttpServer:
    """:data:`app` served by uvicorn in a subprocess on 127.0.0.1.

    :param directory: where its log goes
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str, **params: object) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"

    @property
    def log(self) -> Path:
        return self.directory / "uvicorn.log"

    def start(self) -> None:
        """Start uvicorn on a free port and wait until it answers; a new port if it fails."""
        assert self.process is None, "already running"
        for _ in range(3):
            self.port = _free_port()
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "http_server:app",
                        "--app-dir",
                        str(Path(__file__).resolve().parent),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_until_ready():
                return
            self.stop()
        raise RuntimeError(f"uvicorn did not start; see {self.log}")

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:  # bounded: START_TIMEOUT, 50 ms per try
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                self.stats("_ready")
            except OSError:
                time.sleep(0.05)
            else:
                return True
        return False

    def stats(self, bucket: str) -> dict[str, int]:
        """What the server saw of *bucket* (a blocking call: use it outside an event loop, or
        with ``anyio.to_thread``)."""
        with urllib.request.urlopen(self.url("/stats", bucket=bucket), timeout=2) as response:
            counts: dict[str, int] = json.loads(response.read())
            return counts

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
