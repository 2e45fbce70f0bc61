"""Notifiers: tell people about deploys. One module per URL scheme; "" means log only.

The `notifier` setting is a comma-separated list of URLs; each gets every event (dewy.notify.dispatch
sends them from a background thread of the poller, through each notifier's quiet mode and error limiter).
"""

import re

from dewy import urls
from dewy.notify.base import Notifier

_MAIL_KEYS = frozenset({"username", "password", "from", "subject", "tls", "quiet", "title"})

# scheme -> (module, class, allowed query keys); the module is imported only when used.
# None: any key (a webhook's query goes to its server, except `secret`).
SCHEMES = {
    "log": ("dewy.notify.log", "LogNotifier", frozenset({"quiet"})),
    "slack": ("dewy.notify.slack", "SlackNotifier", frozenset({"title", "url", "quiet", "thread"})),
    "mail": ("dewy.notify.mail", "MailNotifier", _MAIL_KEYS),
    "smtp": ("dewy.notify.mail", "MailNotifier", _MAIL_KEYS),
    "https": ("dewy.notify.webhook", "WebhookNotifier", None),
    "http": ("dewy.notify.webhook", "WebhookNotifier", None),
}

# A comma starts the next URL only where a scheme follows, so commas inside one URL (several mail
# recipients, a webhook's query) stay put.
_NEXT_URL = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")

__all__ = ["SCHEMES", "Notifier", "split", "validate_url", "from_url", "from_setting"]


def split(setting: str) -> list:
    """The URLs of a `notifier` setting, in order ("" -> [])."""
    setting = (setting or "").strip()
    return [url for url in _NEXT_URL.split(setting) if url] if setting else []


def validate_url(setting: str) -> None:
    """Raise ValueError (one line, listing what is supported) unless every URL of the setting is usable."""
    for number, url in enumerate(split(setting), 1):
        try:
            urls.validate(url, SCHEMES, "notifier")
        except ValueError as exc:
            raise ValueError("notifier #%d: %s" % (number, exc) if "," in setting else str(exc)) from None


def from_url(url: str) -> Notifier:
    """Build the notifier for one URL ("" -> the log notifier)."""
    url = url or "log://"
    parsed = urls.validate(url, SCHEMES, "notifier")
    return urls.load_class(SCHEMES, parsed.scheme)(url)


def from_setting(setting: str) -> list:
    """The notifiers of a `notifier` setting ("" -> [the log notifier])."""
    return [from_url(url) for url in split(setting)] or [from_url("")]
