"""Sending notifications without ever holding a deploy up: a bounded queue and one background thread.

The poller (single-threaded otherwise) calls `Dispatcher.notify(event)`, which returns at once: each
notifier's filter (quiet mode, error limiter) decides what it gets, the secrets are scrubbed, and the
result waits in a bounded queue for the thread that delivers it. Every delivery has its own timeout
(dewy.notify.base.TIMEOUT); a failure is logged, never raised; a full queue drops the notification
(logged). `close(timeout)` lets the queue drain for at most `timeout` seconds when the poller exits.
"""

import logging
import queue
import threading
import time

from dewy.audit import hostname
from dewy.log import scrub
from dewy.notify import events
from dewy.notify.events import Event
from dewy.notify.limit import Filter

log = logging.getLogger("dewy.notify")

QUEUE_SIZE = 100
DRAIN_TIMEOUT = 5.0   # at exit: how long the last notifications (dewy stopped) may take to go out


class Dispatcher:
    """Delivers events to several notifiers from one background thread."""

    def __init__(self, notifiers: list, app: str = "dewy", queue_size: int = QUEUE_SIZE):
        self.host = hostname()
        self.app = app  # names the app in every event (a notifier's ?title= overrides it)
        self.outlets = [(notifier, Filter(quiet=notifier.quiet)) for notifier in notifiers]
        self.queue = queue.Queue(queue_size)
        self.thread = None
        self.dropped = 0
        self.sent = 0    # deliveries that went out (for tests and metrics)
        self.failed = 0  # deliveries that failed

    def use_workdir(self, workdir: str) -> None:
        """Tell the notifiers that keep state (Slack's threads) where the workdir is, so it survives a restart."""
        for notifier in self.notifiers:
            if hasattr(notifier, "use_workdir"):
                notifier.use_workdir(workdir)

    @property
    def notifiers(self) -> list:
        """The notifiers, in setting order."""
        return [notifier for notifier, _ in self.outlets]

    def emit(self, name: str, version: str | None, **fields) -> None:
        """Notify the event `name` about version (host and app filled in); returns at once."""
        self.notify(events.make(name, self.host, self.app, version, **fields))

    def notify(self, event: Event) -> None:
        """Queue event for every notifier its filter admits; returns at once, never raises."""
        try:
            event = Event(event.name, {k: scrub(v) for k, v in event.fields.items()})
            for notifier, gate in self.outlets:
                admitted = gate.admit(event)
                if admitted is not None:
                    self._put(notifier, admitted)
        except Exception:  # noqa: BLE001 - a notification must never break the poller
            log.exception("cannot queue the %s notification", event.name)

    def _put(self, notifier, event: Event) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="dewy-notify", daemon=True)
            self.thread.start()
        try:
            self.queue.put_nowait((notifier, event))
        except queue.Full:
            self.dropped += 1
            log.warning("notification %s for %s dropped: %d are waiting already", event.name,
                        notifier.describe(), self.queue.qsize())

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                notifier, event = item
                if notifier.send_event(event):
                    self.sent += 1
                else:
                    self.failed += 1
            finally:
                self.queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait up to timeout seconds for the queue to empty; True when it did."""
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Let what is queued go out (at most timeout seconds), then stop the thread."""
        if self.thread is None:
            return
        if timeout <= 0:  # retired by a reload: finish in the background, wait for nothing
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                pass
            return
        if not self.flush(timeout):
            log.warning("%d notification(s) not sent before exit", self.queue.unfinished_tasks)
            return  # the daemon thread dies with the process
        self.queue.put(None)
        self.thread.join(1.0)
        self.thread = None
