"""The notifier interface: one message per deploy event."""

# Events the poller sends (also the notifier's vocabulary for filtering later).
EVENTS = ("deployed", "failed", "refused", "rolled-back")


class Notifier:
    """Base class of the notifiers; constructed by dewy.notify.from_url(url)."""

    def __init__(self, url: str = ""):
        self.url = url

    def send(self, event: str, text: str, fields: dict) -> None:
        """Deliver one notification; never raises and never logs tokens."""
        raise NotImplementedError
