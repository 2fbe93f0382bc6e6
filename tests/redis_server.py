"""A throwaway redis-server on a loopback port, for the rate-limit tests (stdlib only)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time


class RedisUnavailable(RuntimeError):
    """redis-server is not installed or did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """``with RedisServer() as redis: redis.url`` → ``redis://127.0.0.1:<port>/0``."""

    def __init__(self):
        self.binary = shutil.which("redis-server")
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="cueline-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if not self.binary:
            raise RedisUnavailable("redis-server is not installed (make test installs it)")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RedisUnavailable("redis-server did not answer within 10 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def require_redis() -> bool:
    return os.environ.get("CUELINE_TEST_REQUIRE_REDIS", "") in ("1", "true", "yes")
