"""Notifiers: tell people about deploys. One module per URL scheme; "" means log only."""

from dewy import urls
from dewy.notify.base import Notifier

# scheme -> (module, class, allowed query keys); the module is imported only when used.
SCHEMES = {
    "log": ("dewy.notify.log", "LogNotifier", frozenset()),
}

__all__ = ["SCHEMES", "Notifier", "validate_url", "from_url"]


def validate_url(url: str) -> None:
    """Raise ValueError (one line, listing what is supported) unless url is "" or a usable notifier URL."""
    if url:
        urls.validate(url, SCHEMES, "notifier")


def from_url(url: str) -> Notifier:
    """Build the notifier for url ("" -> the log notifier)."""
    url = url or "log://"
    parsed = urls.validate(url, SCHEMES, "notifier")
    return urls.load_class(SCHEMES, parsed.scheme)(url)
