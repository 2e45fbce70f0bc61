"""The notifier interface: one message per event, delivered by a backend (Slack, mail, a webhook, the log)."""

import logging

from dewy import urls
from dewy.log import redact_text
from dewy.notify.events import Event

log = logging.getLogger("dewy.notify")

TIMEOUT = 10.0  # seconds any one delivery may take (connect, send, answer): notifying never holds a deploy up


class NotifyError(Exception):
    """A delivery failed; str() is one line without credentials."""


class Notifier:
    """Base class of the notifiers; constructed by dewy.notify.from_url(url).

    Backends implement `deliver(event)`, which raises NotifyError (or anything) on failure; `send`
    wraps it so that a notification never raises. `quiet` (the `?quiet=` query key, where the backend
    takes one) keeps deploys, refusals, rollbacks and errors only; `title` names the app in messages.
    """

    quiet_key = True  # the backend takes ?quiet= (a webhook passes its query to the server instead)

    def __init__(self, url: str = ""):
        self.url = url
        self.parsed = urls.parse(url)
        self.quiet = urls.query_bool(self.parsed, "quiet") if self.quiet_key else False
        self.title = (self.parsed.query.get("title") or "").strip() if self.quiet_key else ""
        self.timeout = TIMEOUT

    def describe(self) -> str:
        """How log lines name this notifier: scheme and host, never a path, query or credentials."""
        host = self.parsed.hostname
        return "%s://%s" % (self.parsed.scheme, host) if host else "%s notifier" % self.parsed.scheme

    def deliver(self, event: Event) -> None:
        """Deliver one event; raise on failure (bounded by self.timeout)."""
        raise NotImplementedError

    def send(self, event: str, text: str = "", fields: dict | None = None) -> None:
        """Deliver an event given by name and fields; never raises, logs a failure without credentials.

        `text` is kept for callers of the old interface and ignored: the text is rendered from the fields.
        """
        self.send_event(Event(event, dict(fields or {})))

    def send_event(self, event: Event) -> bool:
        """Deliver event; True when it went out, False (logged at warning) when it did not."""
        try:
            self.deliver(event)
            return True
        except Exception as exc:  # noqa: BLE001 - a notifier must never raise
            log.warning("notification %s via %s failed: %s", event.name, self.describe(),
                        redact_text(str(exc)) or type(exc).__name__)
            return False
