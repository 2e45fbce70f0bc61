"""Download progress: a line every 5 s while a download runs (percent, MiB/s, ETA), from the bytes written
so far and the artifact's size when its store tells it (Artifact.size()). `snapshot()` gives the same
numbers to anything that wants to draw a progress bar.

Test-only: `DEWY_TEST_PROGRESS_INTERVAL` (seconds) replaces the 5 s.
"""

import logging
import os
import time

log = logging.getLogger("dewy.poller")

INTERVAL = 5.0
MIB = 1 << 20


def _interval() -> float:
    try:
        return float(os.environ.get("DEWY_TEST_PROGRESS_INTERVAL", INTERVAL))
    except ValueError:
        return INTERVAL


LISTENER_INTERVAL = 1.0  # seconds between two snapshots sent to the master (`dewy status`, `dewy deploy-now`)


class Progress:
    """Counts the bytes of one download and logs its progress every `interval` seconds."""

    def __init__(self, name: str, size=None, interval: float | None = None, clock=time.monotonic,
                 listener=None):
        self.name = name
        self.listener = listener  # called with a snapshot at most once a second (the master shows it)
        self.next_tell = 0.0
        self._size = size  # an int, None, or a callable returning either (asked again each time: known late)
        self.interval = _interval() if interval is None else interval
        self.clock = clock
        self.started = clock()
        self.next_report = self.started + self.interval
        self.done = 0

    @property
    def total(self) -> int | None:
        """The download's full size in bytes, when known."""
        size = self._size
        if callable(size):
            try:
                size = size()
            except Exception:  # noqa: BLE001 - a size we cannot learn is just unknown
                size = None
        return size if isinstance(size, int) and size > 0 else None

    def update(self, count: int) -> None:
        """count more bytes arrived; log a progress line when one is due."""
        self.done += count
        now = self.clock()
        if self.listener is not None and now >= self.next_tell:
            self.next_tell = now + LISTENER_INTERVAL
            self.listener(self.snapshot(now))
        if now >= self.next_report:
            self.next_report = now + self.interval
            snap = self.snapshot(now)
            log.info("downloading %s: %s", self.name, describe(snap), extra={
                "bytes": snap["done"], "total": snap["total"], "percent": snap["percent"],
                "mib_per_s": snap["mib_per_s"], "eta_s": snap["eta_s"]})

    def snapshot(self, now: float | None = None) -> dict:
        """{done, total, percent, mib_per_s, eta_s, elapsed_s} (total, percent, eta None when the size is unknown)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        total = self.total
        percent = round(100.0 * self.done / total, 1) if total else None
        eta = round((total - self.done) / rate, 1) if total and rate > 0 and total >= self.done else None
        return {"done": self.done, "total": total, "percent": percent, "mib_per_s": round(rate / MIB, 2),
                "eta_s": eta, "elapsed_s": round(elapsed, 1)}


def size_text(n) -> str:
    """A byte count for people: `512 bytes`, `6.7 KiB`, `120.0 MiB`, `2.50 GiB` (not `0.0 MiB` for a small one)."""
    if not isinstance(n, (int, float)):
        return "? bytes"
    if n < 1024:
        return "%d bytes" % n
    if n < MIB:
        return "%.1f KiB" % (n / 1024)
    if n < 1024 * MIB:
        return "%.1f MiB" % (n / MIB)
    return "%.2f GiB" % (n / (1024 * MIB))


def describe(snap: dict) -> str:
    """`45.0% of 120.0 MiB, 12.30 MiB/s, ETA 6s` (`12.0 MiB so far, ...` without a size; KiB or bytes for a
    small download, whose MiB would read 0.0)."""
    rate = snap["mib_per_s"] or 0
    speed = "%.2f MiB/s" % rate if rate >= 0.01 else "%s/s" % size_text(round(rate * MIB))
    if snap["total"]:
        text = "%.1f%% of %s, %s" % (snap["percent"], size_text(snap["total"]), speed)
        if snap["eta_s"] is not None:
            text += ", ETA %ds" % round(snap["eta_s"])
        return text
    return "%s so far, %s" % (size_text(snap["done"]), speed)
