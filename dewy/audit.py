"""The audit trail: `workdir/.dewy/audit.log` (one JSON line per deploy, failure, refusal or rollback)
and the Dewy-style `shipped_to_<host>_<mode>_at_<time>.txt` record left in the registry.
"""

import errno
import json
import os
import re
import socket
import stat
import time
from dataclasses import dataclass

from dewy.clock import utc_iso
from dewy.statefiles import state_dir
from dewy.workdir import state_path

AUDIT_FILE = "audit.log"
RESULTS = ("deployed", "failed", "rolled-back", "refused")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def audit_path(workdir: str) -> str:
    """Where the audit log of a workdir lives."""
    return state_path(workdir, AUDIT_FILE)


def hostname(host_id: str = "") -> str:
    """This host's name as the audit records it: the `host-id` setting when given (the fleet's name for
    it, as in notifications and `dewy fleet`), else the hostname."""
    return host_id or socket.gethostname() or "localhost"


def record(workdir: str, entry: dict) -> dict:
    """Append one entry to the audit log (O_APPEND + fsync, mode 0600) and return it as written.

    Missing standard fields are filled in: time (UTC ISO 8601), host, mode, version,
    previous_version, result, error.
    """
    line = {
        "time": utc_iso(),
        "host": hostname(),
        "mode": None,
        "version": None,
        "previous_version": None,
        "result": None,
        "error": None,
    }
    line.update(entry)
    state_dir(workdir)
    data = (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    # O_APPEND with one write() per line: concurrent writers (master, poller) never interleave a line.
    # O_NOFOLLOW: .dewy/ may belong to the `user` setting's user; never append through a symlink planted there.
    fd = os.open(audit_path(workdir), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a crash cut the last line short: do not glue this one onto it
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return line


def read(workdir: str, strict: bool = False) -> list:
    """All entries of the audit log, oldest first ([] when there is none; damaged lines skipped)."""
    return list(entries(workdir, strict))


MAX_LINE = 1 << 20  # bytes of one entry; a longer "line" (not dewy's) is skipped, never held whole


class Unreadable(OSError):
    """The audit log is there but not a regular file (a symlink, a FIFO, a device planted in its place)."""


def entries(workdir: str, strict: bool = False):
    """The entries of the audit log one by one, oldest first, without holding the whole log in memory (it
    only grows: a long-lived poller reading it after every deploy must not grow with it).

    Opened without following a symlink and without blocking (a FIFO), regular files only, each line
    bounded by MAX_LINE: `.dewy/` may belong to `user`, and root runs `dewy history`. Anything else there is
    Unreadable when strict (the operator's command says so), else read as no entries; a PermissionError
    always goes to the caller."""
    path = audit_path(workdir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        if strict:
            raise Unreadable(errno.ELOOP, "a symbolic link, not dewy's audit log", path) from None
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        if strict:
            raise Unreadable(errno.EINVAL, "not a regular file, not dewy's audit log", path)
        return
    with os.fdopen(fd, "rb") as fh:
        while True:
            line = fh.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                while line and not line.endswith(b"\n"):  # skip the rest of the over-long line
                    line = fh.readline(MAX_LINE)
                continue
            try:
                entry = json.loads(line.decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                continue  # a line cut short by a crash must not hide the rest of the history
            if isinstance(entry, dict):
                yield entry


@dataclass(frozen=True)
class Shipped:
    """The record of one deploy attempt left where the release lives (Dewy's shipped_to file, a gRPC Report)."""

    host: str                          # this host's name, lower case (as Dewy writes it)
    mode: str                          # "server" or "assets" (Dewy's `command`)
    time_ns: int                       # when, in nanoseconds since the epoch (UTC)
    version: str
    tag: str
    previous_version: str | None = None
    release_dir: str = ""
    error: str | None = None           # set when the deploy failed

    @classmethod
    def now(cls, mode: str, version: str, tag: str, host_id: str = "", **fields) -> "Shipped":
        """A record of this host (named by host_id when given), now."""
        return cls(host=hostname(host_id).lower(), mode=mode, time_ns=time.time_ns(), version=version, tag=tag,
                   **fields)

    def stamp(self) -> str:
        """The time as Dewy writes it: YYYYMMDDTHHMMSS.nnnnnnnnnZ (UTC)."""
        seconds, nanos = divmod(self.time_ns, 1_000_000_000)
        return "%s.%09dZ" % (time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)), nanos)

    def sentence(self) -> str:
        """`shipped to <host> <mode> at <time>`: Dewy's record, word for word."""
        return "shipped to %s %s at %s" % (self.host, self.mode, self.stamp())

    def filename(self) -> str:
        """The record's file name: the sentence with `_` for spaces, `.txt` (unsafe characters replaced)."""
        return _UNSAFE.sub("-", self.sentence().replace(" ", "_")) + ".txt"

    def text(self) -> str:
        """The record's content: the sentence, then what was shipped over what."""
        lines = [self.sentence(), "version: %s" % self.version, "tag: %s" % self.tag,
                 "previous_version: %s" % (self.previous_version or "none"), "host: %s" % self.host,
                 "mode: %s" % self.mode, "time: %s" % self.stamp()]
        if self.release_dir:
            lines.append("release_dir: %s" % self.release_dir)
        if self.error:
            lines.append("error: %s" % self.error)
        return "\n".join(lines) + "\n"
