"""The TCP proxy of a container generation: dewy's listening sockets -> the containers' published ports.

Dewy's approach (its container mode proxies too), run inside the generation: the listening sockets are
the master's, shared by every generation, so while a new generation starts the old one goes on accepting;
the new one accepts only once its containers are healthy. On the stop signal the generation closes its
copies of the listeners (connections not yet accepted stay queued for the new generation) and drains the
connections it has, up to drain-time.
"""

import asyncio
import itertools
import logging
import socket
import time

log = logging.getLogger("dewy.container")

CHUNK = 64 * 1024


class Proxy:
    """Forwards each accepted connection on listener i to one of backends[i] (round robin over replicas)."""

    def __init__(self, listeners: list, backends: list, idle_timeout: float = 0.0):
        self.listeners = listeners          # socket.socket objects (listening)
        self.backends = backends            # per listener: [(host, port), ...] one per replica
        self.idle_timeout = idle_timeout    # 0: connections may idle forever
        self.servers = []
        self.active = set()
        self.served = 0
        self.failed = 0
        self._turn = [itertools.cycle(range(len(b))) for b in backends]

    async def start(self) -> None:
        """Start accepting on every listener."""
        for index, sock in enumerate(self.listeners):
            sock.setblocking(False)

            async def handle(reader, writer, index=index):
                await self.forward(index, reader, writer)

            if sock.family == socket.AF_UNIX:
                server = await asyncio.start_unix_server(handle, sock=sock)
            else:
                server = await asyncio.start_server(handle, sock=sock)
            self.servers.append(server)

    def stop_accepting(self) -> None:
        """Close this process's copies of the listeners (the master's and other generations' stay open)."""
        for server in self.servers:
            server.close()

    async def drain(self, seconds: float) -> int:
        """Wait until no connection is left, at most seconds; return how many were still open then."""
        deadline = time.monotonic() + seconds
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = len(self.active)
        for task in list(self.active):
            task.cancel()
        return left

    async def forward(self, index: int, reader, writer) -> None:
        """Copy bytes both ways between a client and a backend until both sides are done."""
        task = asyncio.current_task()
        self.active.add(task)
        upstream = None
        try:
            backends = self.backends[index]
            host, port = backends[next(self._turn[index])]
            try:
                up_reader, upstream = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, asyncio.TimeoutError) as exc:
                self.failed += 1
                log.warning("cannot reach the container on %s:%d: %s", host, port, exc or "timeout")
                return
            last = [time.monotonic()]
            await asyncio.gather(self._copy(reader, upstream, last), self._copy(up_reader, writer, last))
            self.served += 1
        except asyncio.CancelledError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self.active.discard(task)

    async def _copy(self, reader, writer, last: list) -> None:
        idle = False
        try:
            while True:
                if self.idle_timeout > 0:
                    try:
                        data = await asyncio.wait_for(reader.read(CHUNK), self.idle_timeout)
                    except asyncio.TimeoutError:
                        if time.monotonic() - last[0] < self.idle_timeout:
                            continue  # the other direction is busy: not idle
                        idle = True
                        break
                else:
                    data = await reader.read(CHUNK)
                if not data:
                    break
                last[0] = time.monotonic()
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            if idle:  # proxy-idle-timeout: close the connection (the other direction ends with it)
                writer.close()
                return
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except (OSError, RuntimeError):
                pass
