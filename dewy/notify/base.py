"""The notifier interface: one message per deploy event."""


class Notifier:
    """Base class of the notifiers; constructed by dewy.notify.from_url(url)."""

    def __init__(self, url: str = ""):
        self.url = url

    def send(self, event: str, text: str, fields: dict) -> None:
        """Deliver one notification; never raises and never logs tokens.

        event is the audit log's `result`: deployed, failed, refused or rolled-back.
        """
        raise NotImplementedError
