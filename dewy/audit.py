"""The audit trail: `workdir/.dewy/audit.log` (one JSON line per deploy, failure, refusal or rollback)
and the Dewy-style `shipped_to_<host>_<mode>_at_<time>.txt` record left in the registry.
"""

import json
import os
import re
import socket
from datetime import datetime, timezone

AUDIT_FILE = "audit.log"
RESULTS = ("deployed", "failed", "rolled-back", "refused")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def audit_path(workdir: str) -> str:
    """Where the audit log of a workdir lives."""
    return os.path.join(workdir, ".dewy", AUDIT_FILE)


def hostname() -> str:
    """This host's name as the audit records it."""
    return socket.gethostname() or "localhost"


def now_utc() -> datetime:
    """The current time in UTC (seconds precision, as the records show it)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def record(workdir: str, entry: dict) -> dict:
    """Append one entry to the audit log (O_APPEND + fsync, mode 0600) and return it as written.

    Missing standard fields are filled in: time (UTC ISO 8601), host, mode, version,
    previous_version, result, error.
    """
    line = {
        "time": now_utc().isoformat().replace("+00:00", "Z"),
        "host": hostname(),
        "mode": None,
        "version": None,
        "previous_version": None,
        "result": None,
        "error": None,
    }
    line.update(entry)
    directory = os.path.join(workdir, ".dewy")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    # O_APPEND with one write() per line: concurrent writers (master, poller) never interleave a line.
    fd = os.open(audit_path(workdir), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a crash cut the last line short: do not glue this one onto it
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return line


def read(workdir: str) -> list:
    """All entries of the audit log, oldest first ([] when there is none; damaged lines skipped)."""
    try:
        with open(audit_path(workdir), encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash must not hide the rest of the history
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _stamp(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def shipped_filename(host: str, mode: str, when: datetime) -> str:
    """The Dewy-style record name: shipped_to_<host>_<mode>_at_<YYYYMMDDTHHMMSSZ>.txt."""
    return "shipped_to_%s_%s_at_%s.txt" % (_UNSAFE.sub("-", host) or "unknown", _UNSAFE.sub("-", mode), _stamp(when))


def shipped_text(host: str, mode: str, when: datetime, version: str, release_dir: str = "",
                 previous_version: str | None = None) -> str:
    """The content of the shipped_to record: who got which version, when, in which mode."""
    lines = [
        "shipped %s to %s (%s) at %s" % (version, host, mode, _stamp(when)),
        "version: %s" % version,
        "previous_version: %s" % (previous_version or "none"),
        "host: %s" % host,
        "mode: %s" % mode,
        "time: %s" % _stamp(when),
    ]
    if release_dir:
        lines.append("release_dir: %s" % release_dir)
    return "\n".join(lines) + "\n"
