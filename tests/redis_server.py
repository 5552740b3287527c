"""A private redis-server for the tests of werkpool.redis: started on a free loopback port in a
temporary directory, stopped by its own pid.

The tests that use it fail, not skip, when the environment variable ``CI`` is set and no server
can be started (``.ci/run`` installs ``redis-server`` with apt). Elsewhere they skip with the
reason, so a laptop without Redis still runs the rest of the suite.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import coredis

    from werkpool.redis import RedisStore

__all__ = ["RedisServer", "need_redis_server"]

#: The longest a server may take to accept connections after it starts.
START_TIMEOUT = 10.0


def need_redis_server() -> str:
    """The path of redis-server (or valkey-server); fail under CI, skip elsewhere, if none."""
    path = shutil.which("redis-server") or shutil.which("valkey-server")
    if path is None:
        reason = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1, with no persistence: a restart starts empty.

    :param directory: its working directory (its log goes there)
    """

    def __init__(self, directory: Path) -> None:
        self.executable = need_redis_server()
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (on the same port as before, after a stop) and wait until it
        answers a PING; several tries with a new port if the port was taken meanwhile."""
        assert self.process is None, "already running"
        for attempt in range(5):
            log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
            options = {
                "port": str(self.port),
                "bind": "127.0.0.1",
                "save": "",
                "appendonly": "no",
                "dir": str(self.directory),
                "protected-mode": "yes",
            }
            self.process = subprocess.Popen(
                [self.executable, *(arg for k, v in options.items() for arg in (f"--{k}", v))],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            if self._wait_until_ready():
                return
            self.stop()
            if attempt < 4:
                self.port = _free_port()
        message = f"redis-server did not start; see {self.directory / 'redis.log'}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:  # bounded: START_TIMEOUT, 20 ms per try
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Kill the server (SIGKILL: a crash, nothing saved) and wait for it to exit."""
        process = self.process
        if process is None:
            return
        if self.paused:
            self.resume()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Kill the server and start a new one on the same port: it starts empty (no scripts,
        no keys), as after a crash without persistence."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a hung server)."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False


@asynccontextmanager
async def stores(
    server: RedisServer, prefix: str, count: int = 2, /, **options: Any
) -> AsyncIterator[tuple[coredis.Redis[bytes], list[RedisStore]]]:
    """An admin client, and *count* entered stores, each on a client of its own (a process's)."""
    import coredis

    from werkpool.redis import RedisStore

    async with AsyncExitStack() as stack:
        admin = await stack.enter_async_context(coredis.Redis(host="127.0.0.1", port=server.port))
        made: list[RedisStore] = []
        for _ in range(count):
            client = await stack.enter_async_context(
                coredis.Redis(host="127.0.0.1", port=server.port)
            )
            made.append(
                await stack.enter_async_context(RedisStore(client, prefix=prefix, **options))
            )
        yield admin, made
