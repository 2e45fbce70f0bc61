"""dewy.container.proxy on real sockets: round robin over replicas, proxy-idle-timeout, drain after the switch."""

import asyncio
import socket
import time

from dewy.container.proxy import Proxy


async def echo_server(tag: bytes):
    """A backend answering each line with tag + the line; (server, port)."""

    async def handle(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(tag + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


async def ask(port: int, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    answer = await reader.readline()
    writer.close()
    return answer


def test_round_robin_idle_timeout_and_drain():
    async def scenario():
        (a, port_a), (b, port_b) = await echo_server(b"a:"), await echo_server(b"b:")
        sock, port = listener()
        proxy = Proxy([sock], [[("127.0.0.1", port_a), ("127.0.0.1", port_b)]], idle_timeout=0.3)
        await proxy.start()
        assert sorted([await ask(port, b"x\n"), await ask(port, b"y\n")]) == [b"a:x\n", b"b:y\n"]

        # An idle connection is closed after proxy-idle-timeout; one that talks is not.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        for _ in range(3):
            await asyncio.sleep(0.2)
            writer.write(b"ping\n")
            assert (await reader.readline()).endswith(b"ping\n")
        assert await asyncio.wait_for(reader.read(), 2) == b""  # then idle: closed
        assert 0.8 < time.monotonic() - started < 2

        # After the switch: no new connection is accepted here, the open one finishes within drain-time.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"before\n")
        await reader.readline()
        proxy.stop_accepting()
        drained = asyncio.ensure_future(proxy.drain(5))
        await asyncio.sleep(0.1)
        writer.write(b"during drain\n")
        assert (await reader.readline()).endswith(b"during drain\n")
        assert not drained.done()
        writer.close()
        assert await asyncio.wait_for(drained, 3) == 0
        assert sock.fileno() == -1  # this process's copy of the listener is closed
        for server in (a, b):
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_drain_gives_up_at_drain_time():
    async def scenario():
        backend, port_b = await echo_server(b"")
        sock, port = listener()
        proxy = Proxy([sock], [[("127.0.0.1", port_b)]])
        await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hold\n")
        await reader.readline()
        proxy.stop_accepting()
        started = time.monotonic()
        assert await proxy.drain(0.3) == 1  # still open when drain-time ran out: closed
        assert time.monotonic() - started < 1
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        backend.close()
        await backend.wait_closed()

    asyncio.run(scenario())
