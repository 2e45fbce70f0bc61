"""`dewy history`: deploys, refusals and rollbacks of a workdir from `.dewy/audit.log`, newest first.

Read-only and offline: it reads the audit log the poller and the master append to (dewy.audit), so it
works whether or not a master runs.
"""

import collections
import errno
import json
import sys

from dewy import audit
from dewy.urls import plain_text

EXIT_OK = 0
EXIT_NO_HISTORY = 1

DEFAULT_COUNT = 20
OPTIONS = """History options:
  -n N           Show the N newest entries [default: 20].
"""
COLUMNS = ("time", "version", "result", "switch", "reason")


def transition(entry: dict) -> str:
    """`from → to` of an entry: what served before and what was tried (a rollback: from the bad version back)."""
    result = entry.get("result")
    if result == "rolled-back":
        before, after = entry.get("version"), entry.get("to_version") or entry.get("previous_version")
    else:
        before, after = entry.get("previous_version"), entry.get("version")
    return "%s → %s" % (before or "nothing", after or "nothing")


def switch_text(entry: dict) -> str:
    """How long the switch took, when the entry recorded it ("-" otherwise)."""
    seconds = entry.get("switch_seconds")
    if isinstance(seconds, (int, float)):
        return "%.1fs" % seconds
    return "-"


def rows(entries: list) -> list:
    """The table's rows (tuples in COLUMNS order) for entries, in the order given."""
    # The log is in .dewy/, which `user` may write: its text reaches a terminal without control characters.
    return [tuple(plain_text(cell, 2000) for cell in (
        str(e.get("time") or "-"), transition(e), str(e.get("result") or "-"), switch_text(e),
        " ".join(str(e.get("error") or e.get("reason") or "").split()) or "-")) for e in entries]


def format_table(entries: list) -> str:
    """entries as an aligned text table with a header (the reason column last, never cut)."""
    table = [tuple(c.upper() for c in COLUMNS)] + rows(entries)
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in table)


def parse_count(text) -> int:
    """-n's value: a positive integer (ValueError naming what is expected otherwise)."""
    try:
        count = int(str(text))
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError("-n expects a positive number of entries, got %r" % text)
    return count


def main(workdir: str, args: dict) -> int:
    """Print the history of workdir: 0 when there is some, 1 when nothing was ever deployed there."""
    try:
        count = parse_count(args.get("-n") or DEFAULT_COUNT)
    except ValueError as exc:
        print("dewy: %s" % exc, file=sys.stderr)
        return 2
    try:
        # The newest `count` only, however long the log: it is read line by line, never held whole.
        entries = list(reversed(collections.deque(audit.entries(workdir, strict=True), maxlen=count)))
    except OSError as exc:
        why = "permission denied (run it as root or as the user dewy runs as)" if exc.errno in (
            errno.EACCES, errno.EPERM) else exc.strerror or str(exc)
        print("dewy: cannot read %s: %s" % (audit.audit_path(workdir), why), file=sys.stderr)
        return EXIT_NO_HISTORY
    if args.get("--json"):
        print(json.dumps(entries, indent=2, sort_keys=True, ensure_ascii=False))
        return EXIT_OK if entries else EXIT_NO_HISTORY
    if not entries:
        print("dewy: no history in %s: nothing was deployed there yet (no %s)" % (workdir, audit.audit_path(workdir)),
              file=sys.stderr)
        return EXIT_NO_HISTORY
    print(format_table(entries))
    return EXIT_OK
