"""`log://` (and the empty notifier setting): notifications go to dewy's log only."""

import logging

from dewy import urls
from dewy.notify.base import Notifier

log = logging.getLogger("dewy.notify")


class LogNotifier(Notifier):
    """Logs each event and its text at INFO."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError when log:// carries a host or path (it takes none)."""
        if parsed.netloc or parsed.path:
            raise ValueError("log notifier takes no host or path: use log:// or leave notifier empty")

    def send(self, event: str, text: str, fields: dict) -> None:
        """Log the event; swallow any error so that a notification never breaks a deploy."""
        try:
            log.info("notify %s: %s", event, text, extra={"event": event})
        except Exception:  # noqa: BLE001 - a notifier must never raise
            pass
