"""What deploys leave behind for the next ones: the refused versions (`.dewy/refused.json`), the run of
identical transient failures (audited once), and each outcome's audit line and notification.
"""

import logging
import os

from dewy import audit
from dewy import log as dewy_log
from dewy.clock import utc_iso
from dewy.statefiles import StateFileError, read_state, write_json_atomic
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
        # Refusals made while the file could not be read: never written over it (that would lose its entries),
        # written once it reads again; refused meanwhile all the same.
        self.unwritten = {}

    def load(self) -> dict:
        """The refused versions and why ({} when the file is missing); StateFileError (naming the file and the
        error) when it is there but unreadable: the poller then deploys nothing new (fail closed)."""
        data = read_state(self.path, "refused-versions file")
        if data is None or data == {}:
            entries = {}
        elif isinstance(data, dict) and isinstance(data.get("versions"), dict):
            entries = dict(data["versions"])
        else:
            raise StateFileError('cannot read the refused-versions file %s: expected {"versions": {VERSION: '
                                 '{"reason": ...}}}' % self.path)
        if self.unwritten:
            entries.update(self.unwritten)
            self.unwritten = {}
            self._write(entries)
            log.info("%s reads again: the refusals made meanwhile are written to it", self.path)
        return entries

    def versions(self) -> frozenset:
        """The refused versions (normalised); StateFileError when the file cannot be read."""
        return frozenset(self.load())

    def holds(self, version: str) -> bool:
        """Whether version is refused (True while the file cannot be read: nothing is known to be allowed)."""
        try:
            return version in self.load()
        except StateFileError:
            return True

    def add(self, version: str, reason: str | None, **extra) -> None:
        """Refuse version from now on, remembering why (and `extra` fields: `fleet` for fleet rollouts)."""
        entry = dict(extra, reason=reason, time=utc_iso())
        try:
            entries = self.load()
        except StateFileError as exc:
            self.unwritten[version] = entry
            log.error("%s: %s stays refused, written there once the file reads again", exc, version)
            return
        entries[version] = entry
        self._write(entries)

    def remove(self, version: str) -> None:
        """Allow version again."""
        self.unwritten.pop(version, None)
        try:
            entries = self.load()
        except StateFileError as exc:
            log.error("%s: cannot allow %s again there", exc, version)
            return
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
    if backends.metrics is not None:
        backends.metrics.audited(entry)  # an OTel log record with `otlp-endpoint`
