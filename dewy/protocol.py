"""JSON-lines messages between the master and the poller worker over a socketpair."""

import json
import socket

VERSION = 1
MAX_LINE = 1 << 20  # a message larger than this is a bug, not data


class ProtocolError(Exception):
    """The peer sent something that is not a protocol message."""


class Channel:
    """One end of the master <-> poller pipe: send dicts, receive dicts."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = b""
        self.closed = False

    def fileno(self) -> int:
        """The descriptor to wait on for incoming messages."""
        return self.sock.fileno()

    def send(self, type_: str, **fields) -> None:
        """Send one message; raises OSError when the peer is gone."""
        msg = {"v": VERSION, "type": type_, **fields}
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        # Blocking send: messages are small and the peer always reads; the socket
        # may be non-blocking for receiving, so write in a loop.
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                import select
                select.select([], [self.sock], [], 5.0)
                continue
            view = view[n:]

    def receive(self) -> list:
        """Read what is available and return the complete messages; [] and .closed on EOF."""
        try:
            chunk = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return []
        self._buf += chunk
        if len(self._buf) > MAX_LINE and b"\n" not in self._buf:
            raise ProtocolError("message larger than %d bytes" % MAX_LINE)
        *lines, self._buf = self._buf.split(b"\n")
        messages = []
        for line in lines:
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                raise ProtocolError("not JSON: %r" % line[:200]) from exc
            if not isinstance(msg, dict) or "type" not in msg:
                raise ProtocolError("not a message: %r" % line[:200])
            messages.append(msg)
        return messages

    def close(self) -> None:
        """Close this end."""
        self.closed = True
        self.sock.close()
