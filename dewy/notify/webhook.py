"""`https://…`: a generic webhook (a chat tool's incoming webhook, an internal service); one JSON POST per event.

The body is the event as JSON: `event`, `title`, `text`, `host`, `app`, `version` and the event's other
fields. With `?secret=` (taken out of the URL: the server never sees it) or `DEWY_WEBHOOK_SECRET`, each
request carries `X-Dewy-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub's scheme), so the
receiver can tell dewy's requests from anyone else's. Every other query key goes to the server as
given (some webhooks carry their token there). `http://` is allowed for loopback hosts only.
A 2xx answer is success; anything else, or no answer within the timeout, is logged.
"""

import hashlib
import hmac
import json
import os
import urllib.parse

from dewy import __version__, urls
from dewy.notify.base import Notifier, NotifyError
from dewy.notify.events import Event

SIGNATURE_HEADER = "X-Dewy-Signature-256"
SECRET_KEY = "secret"


def signature(secret: str, body: bytes) -> str:
    """The X-Dewy-Signature-256 value of body: `sha256=<hex HMAC-SHA256 keyed with secret>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier(Notifier):
    """POSTs each event as JSON to a URL, signed when a secret is set."""

    quiet_key = False  # the query belongs to the server

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a URL without a host, or plaintext http:// to anything but loopback."""
        urls.check_web_url(parsed, "webhook")

    def __init__(self, url: str):
        super().__init__(url)
        self.validate(self.parsed)
        parts = urllib.parse.urlsplit(url.strip())
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        secrets = [v for k, v in query if k == SECRET_KEY]
        self.secret = (secrets[-1] if secrets else "") or os.environ.get("DEWY_WEBHOOK_SECRET", "")
        # The URL the server gets: the secret key taken out, everything else byte for byte as written.
        kept = "&".join(p for p in parts.query.split("&") if p.partition("=")[0] != SECRET_KEY)
        self.target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, kept, ""))

    def body(self, event: Event) -> bytes:
        """The JSON the server receives."""
        return json.dumps(event.to_json(), sort_keys=True, default=str).encode()

    def deliver(self, event: Event) -> None:
        """POST the event; NotifyError naming the status (never the URL: its path may be the credential)."""
        import requests

        body = self.body(event)
        headers = {"Content-Type": "application/json", "User-Agent": "dewy/%s" % __version__}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        try:
            response = requests.post(self.target, data=body, headers=headers, timeout=(self.timeout, self.timeout),
                                     allow_redirects=False)
        except requests.RequestException as exc:
            raise NotifyError("no answer from %s: %s" % (self.describe(), type(exc).__name__)) from None
        with response:
            if not 200 <= response.status_code < 300:
                raise NotifyError("%s answered HTTP %d" % (self.describe(), response.status_code))
