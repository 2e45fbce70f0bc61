"""An app generation's stderr: forwarded to the master's stderr, its tail kept for refusal reasons.

Each generation writes its stderr into a pipe; the master reads the other end without blocking in its
selector loop, copies what it reads to its own stderr (so the journal still gets the app's output)
and keeps only the last TAIL_BYTES in memory. When a release is refused (`exited with code 127
before it was ready`), the reason then also says what the app said last (`ModuleNotFoundError: ...`).

The pipe is enlarged (F_SETPIPE_SZ) so that an app writing while the master is briefly busy is not
stalled; the master never waits on the pipe. The app gets the write end as its fd 2 only; the
master closes its copy right after the fork, so the read end sees EOF once every process of the
generation has closed it.
"""

import fcntl
import os
import time

from dewy import secrets
from dewy.log import REDACTED, scrub

TAIL_BYTES = 4096
PIPE_SIZE = 1 << 20  # the unprivileged maximum (/proc/sys/fs/pipe-max-size) by default
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
REASON_CHARS = 600  # how much of the tail a one-line refusal reason quotes


class StderrTail:
    """The read end of one generation's stderr pipe, forwarding to `forward_fd` and keeping a tail."""

    def __init__(self, read_fd: int, forward_fd: int = 2):
        self.fd = read_fd
        self.forward_fd = forward_fd
        self.tail = bytearray()
        self.closed = False
        self.as_json = None  # set to the app's fields (pid, generation, version) when log-format = json
        self.partial = b""   # the unfinished last line (forwarded once complete: masked as a whole)
        # The values of the secrets dewy knows, masked in what is copied to the journal (the app may print
        # its environment or a connection string).
        self.masks = [(value.encode(), REDACTED.encode()) for value in secrets.values()]
        os.set_blocking(read_fd, False)
        os.set_inheritable(read_fd, False)

    @classmethod
    def pipe(cls, forward_fd: int = 2) -> tuple:
        """A new pipe: (StderrTail on the read end, write end for the child's fd 2; the caller closes it)."""
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe still works; the app may just wait a little more often
        return cls(r, forward_fd), w

    def fileno(self) -> int:
        """The descriptor to wait on."""
        return self.fd

    def read(self) -> bool:
        """Read everything available now (forwarding it, keeping the tail); False once the pipe hit EOF."""
        while not self.closed:
            try:
                chunk = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                return False
            self._forward(chunk)
            self.tail += chunk
            if len(self.tail) > TAIL_BYTES:
                del self.tail[:-TAIL_BYTES]
        return False

    def _forward(self, data: bytes) -> None:
        """Copy what the app wrote to the master's stderr (as JSON records when the log is JSON), secrets
        masked, line by line (a secret is never split between two writes)."""
        self._write(self._json_lines(data) if self.as_json is not None else self._plain_lines(data))

    def _mask(self, line: bytes) -> bytes:
        for secret, mask in self.masks:
            if secret in line:
                line = line.replace(secret, mask)
        return line

    def _plain_lines(self, data: bytes, flush: bool = False) -> bytes:
        """The complete lines of data, masked; the unfinished last one is held back (up to TAIL_BYTES)."""
        if not self.masks:
            return data
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = b"".join(self._mask(line) + b"\n" for line in lines)
        if flush or len(self.partial) > TAIL_BYTES:
            out += self._mask(self.partial)
            self.partial = b""
        return out

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.forward_fd, view):]
            except BlockingIOError:
                return  # the master's own stderr is full: drop rather than stall the master
            except OSError:
                return

    def _json_lines(self, data: bytes, flush: bool = False) -> bytes:
        """Complete lines of data as dewy's JSON log records (logger "app"), so a JSON log stays parseable."""
        import json

        from dewy.clock import utc_iso

        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if flush or len(self.partial) > TAIL_BYTES:
            lines.append(self.partial)  # EOF, or a "line" too long to hold back
            self.partial = b""
        records = []
        for line in lines:
            if line:
                record = {"time": utc_iso(time.time(), millis=True), "level": "info", "logger": "app",
                          "msg": self._mask(line).decode("utf-8", "replace").rstrip("\r")}
                record.update(self.as_json)
                records.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        return b"".join(records)

    def text(self) -> str:
        """The kept tail as text."""
        return self.tail.decode("utf-8", "replace")

    def reason(self, limit: int = REASON_CHARS) -> str:
        """The last lines of the tail joined on one line (` | `), at most limit characters; "" when silent."""
        lines = [line.strip() for line in self.text().splitlines() if line.strip()]
        picked, size = [], 0
        for line in reversed(lines):
            if picked and size + len(line) + 3 > limit:
                break
            picked.insert(0, line)
            size += len(line) + 3
        text = " | ".join(picked)
        return text if len(text) <= limit else "..." + text[-(limit - 3):]

    def close(self) -> None:
        """Close the read end (the app then gets EPIPE on further writes; only once it is gone)."""
        if not self.closed:
            if self.as_json is not None and self.partial:
                self._write(self._json_lines(b"", flush=True))  # the last line had no newline
            elif self.partial:
                self._write(self._plain_lines(b"", flush=True))
            self.closed = True
            os.close(self.fd)


def with_reason(why: str, tail) -> str:
    """why, followed by what the app last wrote to stderr when there is something."""
    if tail is None:
        return why
    tail.read()
    # The app may print what it connects to (postgres://user:password@...) or its secrets: mask them
    # before the text reaches refused.json, the audit log and notifications.
    said = scrub(tail.reason())
    return "%s; stderr: %s" % (why, said) if said else why
