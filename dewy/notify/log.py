"""`log://` (and the empty notifier setting): notifications go to dewy's log only."""

import logging

from dewy import urls
from dewy.notify.base import Notifier
from dewy.notify.events import Event

log = logging.getLogger("dewy.notify")


class LogNotifier(Notifier):
    """Logs each event and its text at INFO."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError when log:// carries a host or path (it takes none)."""
        if parsed.netloc or parsed.path:
            raise ValueError("log notifier takes no host or path: use log:// or leave notifier empty")
        urls.query_bool(parsed, "quiet")

    def deliver(self, event: Event) -> None:
        """Log the event."""
        log.info("notify %s: %s", event.name, event.text, extra={"event": event.name})
