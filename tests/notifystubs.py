"""Receivers for dewy's notifications on 127.0.0.1: a Slack Web API stand-in, a webhook server that checks
signatures, and an SMTP server (aiosmtpd's Controller) with an authenticator.

SlackStub speaks what Slack documents for `POST /api/chat.postMessage`
(https://api.slack.com/methods/chat.postMessage):
- the token as `Authorization: Bearer xoxb-...`, or as the `token` field of a form body;
- a body as `application/x-www-form-urlencoded` (blocks then a JSON string) or `application/json`
  (JSON requires the Authorization header: a `token` inside JSON is not read);
- HTTP 200 with `{"ok": true, "channel": "C...", "ts": "1700000000.000100", "message": {...}}`, or
  `{"ok": false, "error": "not_authed" | "invalid_auth" | "channel_not_found" | "no_text" | "invalid_json"}`;
- HTTP 429 with `Retry-After: <seconds>` when rate limited (`rate_limit_next(n, retry_after)`).
`thread_ts` makes a reply; every accepted message is recorded in `messages`.

Servers are threads in the test process; `close()` (or leaving the `with` block) stops them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import wait_until


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Stub:
    """A ThreadingHTTPServer on a free 127.0.0.1 port, run by a thread; `url` is its base URL."""

    handler = BaseHTTPRequestHandler

    def __init__(self):
        self.lock = threading.RLock()  # wait_for holds it while a predicate may call names()
        self.requests = []
        stub = self

        class Handler(self.handler):
            server_stub = stub

            def log_message(self, *args):  # quiet: pytest shows what the tests assert
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name=type(self).__name__, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.server.server_address[1]

    def wait_for(self, predicate, timeout: float = 10.0):
        """predicate()'s first truthy value (evaluated under the lock); AssertionError after timeout."""
        def check():
            with self.lock:
                return predicate()
        return wait_until(check, timeout, "what %s received" % type(self).__name__,
                          lambda: "received so far: %r" % (self.requests,))

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _SlackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        stub = self.server_stub
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        with stub.lock:
            stub.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "body": raw})
            limited = stub.limit_next > 0
            if limited:
                stub.limit_next -= 1
        if limited:
            return self.answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(stub.retry_after)})
        if urllib.parse.urlsplit(self.path).path != "/api/chat.postMessage":
            return self.answer(404, {"ok": False, "error": "unknown_method"})
        token = None
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):]
        if ctype == "application/json":
            try:
                args = json.loads(raw or b"{}")
            except ValueError:
                return self.answer(200, {"ok": False, "error": "invalid_json"})
            blocks = args.get("blocks")
        elif ctype in ("application/x-www-form-urlencoded", ""):
            args = dict(urllib.parse.parse_qsl(raw.decode()))
            token = token or args.pop("token", None)
            try:
                blocks = json.loads(args["blocks"]) if args.get("blocks") else None
            except ValueError:
                return self.answer(200, {"ok": False, "error": "invalid_blocks"})
        else:
            return self.answer(200, {"ok": False, "error": "invalid_form_data"})
        if not token:
            return self.answer(200, {"ok": False, "error": "not_authed"})
        if token not in stub.tokens:
            return self.answer(200, {"ok": False, "error": "invalid_auth"})
        channel = args.get("channel")
        if not channel or channel.lstrip("#") not in stub.channels:
            return self.answer(200, {"ok": False, "error": "channel_not_found"})
        if not (args.get("text") or blocks):
            return self.answer(200, {"ok": False, "error": "no_text"})
        with stub.lock:
            stub.counter += 1
            ts = "1700000000.%06d" % stub.counter
            message = {"channel": channel, "text": args.get("text"), "blocks": blocks, "ts": ts,
                       "thread_ts": args.get("thread_ts"), "content_type": ctype}
            stub.messages.append(message)
        self.answer(200, {"ok": True, "channel": stub.channels[channel.lstrip("#")], "ts": ts,
                          "message": {"type": "message", "text": args.get("text"), "ts": ts}})

    def answer(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class SlackStub(_Stub):
    """A Slack Web API stand-in: `api_url` (ends with /) is what SLACK_API_URL takes."""

    handler = _SlackHandler

    def __init__(self, tokens=("xoxb-good",), channels=("deploys",)):
        self.tokens = set(tokens)
        self.channels = {name: "C%07d" % (i + 1) for i, name in enumerate(channels)}
        self.messages = []
        self.counter = 0
        self.limit_next = 0
        self.retry_after = 1
        super().__init__()

    @property
    def api_url(self) -> str:
        """The base URL for the SDK (SLACK_API_URL)."""
        return "http://127.0.0.1:%d/api/" % self.port

    def rate_limit_next(self, count: int, retry_after: int = 1) -> None:
        """Answer the next count requests with 429 and Retry-After: retry_after."""
        with self.lock:
            self.limit_next, self.retry_after = count, retry_after


class _HookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        stub = self.server_stub
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        parts = urllib.parse.urlsplit(self.path)
        signature = headers.get("x-dewy-signature-256")
        verified = None
        if stub.secret is not None:
            want = "sha256=" + hmac.new(stub.secret.encode(), raw, hashlib.sha256).hexdigest()
            verified = signature is not None and hmac.compare_digest(signature, want)
        if stub.delay:
            time.sleep(stub.delay)
        status = 401 if verified is False else stub.status
        with stub.lock:
            stub.requests.append({"path": parts.path, "query": dict(urllib.parse.parse_qsl(parts.query)),
                                  "headers": headers, "body": raw, "verified": verified, "status": status})
            if status == 200:
                stub.events.append(json.loads(raw))
        data = b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class WebhookServer(_Stub):
    """Receives webhook POSTs; with `secret`, a request without the right X-Dewy-Signature-256 gets 401."""

    handler = _HookHandler

    def __init__(self, secret: str | None = None, status: int = 200, delay: float = 0.0):
        self.secret = secret
        self.status = status
        self.delay = delay
        self.events = []  # the JSON bodies of accepted requests
        super().__init__()

    def url(self, path: str = "/hook", query: str = "") -> str:
        """An http:// URL of this server (loopback: dewy allows http:// there)."""
        return "http://127.0.0.1:%d%s%s" % (self.port, path, "?" + query if query else "")

    def names(self) -> list:
        """The event names received, in order."""
        with self.lock:
            return [e["event"] for e in self.events]


class MailServer:
    """aiosmtpd's Controller on 127.0.0.1 with a LOGIN/PLAIN authenticator; `messages` holds what arrived."""

    def __init__(self, users: dict, tls_context=None, require_starttls: bool = False):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.users = users
        self.messages = []  # (envelope from, [rcpt], message bytes, authenticated user, over TLS)
        self.logins = []    # (user, ok)
        server = self

        def authenticator(smtp, session, envelope, mechanism, data):
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            user, password = data.login.decode(), data.password.decode()
            ok = users.get(user) == password
            server.logins.append((user, ok))
            return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 - aiosmtpd's naming
                server.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                        session.auth_data, session.ssl is not None))
                return "250 OK"

        from dewy.demo.demo import free_port

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticator,
                                     auth_required=bool(users), auth_require_tls=require_starttls,
                                     tls_context=tls_context, require_starttls=require_starttls)
        self.controller.start()

    def close(self) -> None:
        """Stop the server."""
        self.controller.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
