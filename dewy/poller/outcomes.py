"""What deploys leave behind for the next ones: the refused versions (`.dewy/refused.json`), the run of
identical transient failures (audited once), and each outcome's audit line and notification.
"""

import logging
import os

from dewy import audit
from dewy import log as dewy_log
from dewy.clock import utc_iso
from dewy.status import read_json, write_json_atomic
from dewy.workdir import state_path

log = logging.getLogger("dewy.poller")

REFUSED_FILE = "refused.json"


class Refused:
    """`workdir/.dewy/refused.json`: versions never to deploy again (survives restarts).

    Format: {"versions": {"1.2.3": {"reason": "...", "time": "2026-...Z"[, "fleet": "published" | "adopted" |
    "pending"]}}}. Delete an entry to retry it. `fleet` (rollouts): this host refused the version fleet-wide
    (or must still: pending), or adopted the fleet's refusal; such entries go when the fleet's key does.
    """

    def __init__(self, workdir: str):
        self.path = state_path(workdir, REFUSED_FILE)

    def load(self) -> dict:
        """The refused versions and why ({} when the file is missing or unreadable)."""
        data = read_json(self.path, "refused-versions file")
        versions = data.get("versions") if isinstance(data, dict) else None
        return dict(versions) if isinstance(versions, dict) else {}

    def versions(self) -> frozenset:
        """The refused versions (normalised)."""
        return frozenset(self.load())

    def add(self, version: str, reason: str | None, **extra) -> None:
        """Refuse version from now on, remembering why (and `extra` fields: `fleet` for fleet rollouts)."""
        entries = self.load()
        entries[version] = dict(extra, reason=reason, time=utc_iso())
        self._write(entries)

    def remove(self, version: str) -> None:
        """Allow version again."""
        entries = self.load()
        if entries.pop(version, None) is not None:
            self._write(entries)

    def _write(self, entries: dict) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_json_atomic(self.path, {"versions": entries})


class Repeats:
    """The last transient failure (version, error), so a run of identical failures is audited once."""

    def __init__(self):
        self.last = None
        self.count = 0  # failures of the last failed version in a row (whatever their errors)

    def first_time(self, version: str, error: str) -> bool:
        """Remember (version, error); True unless it is the same as the last failure."""
        self.count = self.count + 1 if self.last and self.last[0] == version else 1
        if self.last == (version, error):
            return False
        self.last = (version, error)
        return True

    def pending(self, version: str) -> str | None:
        """The error of the last failed attempt at version, if the last failure was of that version."""
        return self.last[1] if self.last and self.last[0] == version else None

    def clear(self) -> None:
        """Forget: the next failure is news again."""
        self.last = None
        self.count = 0


# Entry keys that travel with a notification (besides the version).
_NOTIFIED_KEYS = ("previous_version", "to_version", "mode", "error", "generation", "tag", "artifact")


def record_event(backends, result: str, entry: dict, event: str | None = None, **notify) -> None:
    """Append entry to the audit log (result, mode filled in) and notify `event` (default: the result) with the
    entry's main fields plus `notify` (backends: a dewy.poller.deploy.Backends); failures are only logged."""
    config = backends.config
    entry = {key: dewy_log.scrub(value) for key, value in dict(entry, result=result, mode=config.mode,
                                                                host=audit.hostname(config.host_id)).items()}
    try:
        audit.record(config.workdir, entry)
    except OSError as exc:
        log.error("cannot write the audit log: %s", exc)
    fields = {key: entry[key] for key in _NOTIFIED_KEYS if entry.get(key) is not None}
    fields.update(notify)
    backends.notifier.emit(event or result, entry.get("version"), **fields)
