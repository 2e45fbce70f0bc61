"""Deploy triggers: `trigger = 127.0.0.1:9465` serves `POST /deploy` from the poller (off by default).

A request is only a hint to poll now: what is deployed is still what the registry says. Two ways in,
on the same path:
- `Authorization: Bearer <trigger-token>` (compared in constant time);
- a GitHub webhook: `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body with trigger-secret>`
  (GitHub's documented scheme); `X-GitHub-Event: release` polls, `ping` answers, others are ignored.
A bad or missing credential is a 401 and a log line (never the credential itself). Accepted requests spend
from one token bucket (RATE_BURST, one back every RATE_EVERY seconds): 429 with Retry-After when empty.
Failed ones spend from their source address's own bucket (FAIL_BURST, one back every FAIL_EVERY s), so
bad requests from one address neither lock out a real webhook nor get to guess for long. A GitHub delivery
seen before (`X-GitHub-Delivery`, within REPLAY_WINDOW) is answered 200 and ignored.
The listener bounds what a client can hold: at most MAX_CONNECTIONS at once (more are closed at accept),
REQUEST_DEADLINE seconds per connection for its headers and body however slowly they trickle in (then the
connection is shut), and a client that goes away mid-request is one log line, not a traceback.

The hint goes straight to the poller this thread runs in (Trigger(poke): the poller's loop wakes up and
polls now), never through the master: with the `user` setting the poller cannot reach the master's root-only
control socket. A paused dewy (`dewy pause`: the pause file, which the poller reads) answers 409 and polls
nothing; a rollback's hold does not stop a poll (the poller then deploys only a newer version).
"""

import hashlib
import hmac
import json
import logging
import socket
import threading
import time

log = logging.getLogger("dewy.poller")

MAX_BODY = 1 << 20  # GitHub caps webhook payloads at 25 MB; a release event is a few KiB
RATE_BURST, RATE_EVERY = 10, 6.0  # 10 requests at once, then one every 6 s
FAIL_BURST, FAIL_EVERY = 5, 60.0   # per source address: 5 failed requests, then one a minute
MAX_SOURCES = 10000               # source addresses remembered (their failure buckets)
REPLAY_WINDOW = 600.0             # seconds a GitHub delivery id is remembered
MAX_DELIVERIES = 10000
MAX_CONNECTIONS = 32              # connections served at once; more are closed at accept
REQUEST_DEADLINE = 10.0           # seconds a connection may take to send one request (headers and body)


class Bucket:
    """A token bucket: take() is True while requests are within the rate (thread-safe)."""

    def __init__(self, burst: int = RATE_BURST, every: float = RATE_EVERY, clock=time.monotonic):
        self.burst, self.every, self.clock = burst, every, clock
        self.tokens, self.at = float(burst), clock()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) / self.every)
            self.at = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True

    def retry_after(self) -> int:
        """Whole seconds until a token is back."""
        with self.lock:
            return max(1, int((1 - self.tokens) * self.every + 0.999))


class Sources:
    """Per source address token buckets (failed requests), bounded in number (thread-safe)."""

    def __init__(self, burst: int = FAIL_BURST, every: float = FAIL_EVERY, clock=time.monotonic):
        self.burst, self.every, self.clock = burst, every, clock
        self.buckets = {}
        self.lock = threading.Lock()

    def bucket(self, source: str) -> Bucket:
        with self.lock:
            found = self.buckets.get(source)
            if found is None:
                if len(self.buckets) >= MAX_SOURCES:
                    self.buckets.clear()  # under a flood of addresses: forget rather than grow
                found = self.buckets[source] = Bucket(self.burst, self.every, self.clock)
            return found

    def blocked(self, source: str) -> bool:
        """Whether source has spent its failures (without spending one)."""
        bucket = self.bucket(source)
        with bucket.lock:
            now = bucket.clock()
            return min(bucket.burst, bucket.tokens + (now - bucket.at) / bucket.every) < 1


class Deliveries:
    """GitHub delivery ids seen within REPLAY_WINDOW (thread-safe, bounded)."""

    def __init__(self, window: float = REPLAY_WINDOW, clock=time.monotonic):
        self.window, self.clock = window, clock
        self.seen = {}
        self.lock = threading.Lock()

    def replayed(self, delivery: str) -> bool:
        """True when delivery was seen within the window; else remember it now."""
        with self.lock:
            now = self.clock()
            if len(self.seen) >= MAX_DELIVERIES:
                self.seen = {d: t for d, t in self.seen.items() if now - t < self.window}
                if len(self.seen) >= MAX_DELIVERIES:
                    self.seen.clear()
            at = self.seen.get(delivery)
            if at is not None and now - at < self.window:
                return True
            self.seen[delivery] = now
            return False


def limit_server(server, max_connections: int | None = None, deadline: float | None = None) -> None:
    """Bound what clients can hold of a socketserver-based HTTP server (the metrics listener is
    prometheus_client's): at most max_connections handled at once (more are closed at accept), and each
    connection shut after deadline seconds, however slowly its request trickles in."""
    slots = threading.BoundedSemaphore(max_connections or MAX_CONNECTIONS)
    seconds = deadline or REQUEST_DEADLINE
    accept, serve = server.process_request, server.finish_request

    def process_request(request, client_address):
        if not slots.acquire(blocking=False):
            server.shutdown_request(request)
            return
        try:
            accept(request, client_address)
        except BaseException:
            slots.release()
            raise

    def finish_request(request, client_address):
        def cut():
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        timer = threading.Timer(seconds, cut)
        timer.daemon = True
        timer.start()
        try:
            request.settimeout(seconds)
            serve(request, client_address)
        except OSError as exc:  # gone mid-request, or cut at the deadline
            log.debug("a client of %s went away mid-request: %s", type(server).__name__, type(exc).__name__)
        finally:
            timer.cancel()
            slots.release()

    server.process_request, server.finish_request = process_request, finish_request


def github_signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for body: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check(headers, body: bytes, token: str, secret: str) -> tuple:
    """(status, what) for a request: 202 poll, 200 ping, 204 ignored event, 401 bad credentials."""
    signature = headers.get("X-Hub-Signature-256")
    if signature is not None:
        if not secret or not hmac.compare_digest(signature.strip(), github_signature(secret, body)):
            return 401, "bad X-Hub-Signature-256"
        event = headers.get("X-GitHub-Event", "")
        if event == "ping":
            return 200, "ping"
        if event != "release":
            return 204, "ignored %s event" % (event or "unnamed")
        return 202, "GitHub release event"
    auth = headers.get("Authorization") or ""
    scheme, _, given = auth.partition(" ")
    if not token or scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 401, "bad or missing bearer token" if auth else "no Authorization or X-Hub-Signature-256"
    return 202, "bearer token"


class Trigger:
    """The trigger HTTP listener of one poller; start(config) (again after a reload), stop()."""

    def __init__(self, poke=None):
        self.server = None
        self.key = None  # what the running server was started with
        self.poke = poke or (lambda: None)  # called from the server's thread: make the poller poll now

    def start(self, config) -> None:
        """Serve config.trigger (stop when it is off or changed); a port in use is logged, not fatal."""
        key = (config.trigger, config.trigger_token, config.trigger_secret, config.workdir)
        if key == self.key:
            return
        self.stop()
        if not config.trigger:
            return
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from dewy import pause
        from dewy.values import parse_address

        token, secret = config.trigger_token, config.trigger_secret
        workdir, poke = config.workdir, self.poke
        bucket, sources, deliveries = Bucket(), Sources(), Deliveries()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "dewy-trigger"

            timeout = REQUEST_DEADLINE  # per read; the whole request is bounded by the deadline in setup()

            def setup(self):
                super().setup()
                # However slowly the client trickles its request in, the connection ends at the deadline.
                self.deadline = threading.Timer(REQUEST_DEADLINE, self.cut)
                self.deadline.daemon = True
                self.deadline.start()

            def cut(self):
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def finish(self):
                self.deadline.cancel()
                try:
                    super().finish()
                except OSError:
                    pass

            def handle(self):
                try:
                    super().handle()
                except (OSError, ValueError) as exc:  # gone mid-request, or cut at the deadline
                    log.info("trigger: %s went away mid-request (%s)", self.client_address[0],
                             type(exc).__name__)
                    self.close_connection = True

            def do_POST(self):  # noqa: N802 — the name http.server dispatches to
                source = self.client_address[0]
                if sources.blocked(source):
                    retry = sources.bucket(source).retry_after()
                    self.reply(429, {"error": "too many failed requests from %s" % source}, {"Retry-After": str(retry)})
                    return
                if self.path.split("?")[0] != "/deploy":
                    self.reply(404, {"error": "POST /deploy"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    self.reply(413, {"error": "body must be 0..%d bytes" % MAX_BODY})
                    return
                body = self.rfile.read(length)
                if len(body) < length:
                    raise ConnectionError("the body ended early")
                code, what = check(self.headers, body, token, secret)
                if code == 401:
                    sources.bucket(source).take()  # a failure spends from its source's bucket only
                    log.warning("trigger: refused a request from %s: %s", self.client_address[0], what)
                    self.reply(401, {"error": what})
                    return
                delivery = self.headers.get("X-GitHub-Delivery")
                if delivery and self.headers.get("X-Hub-Signature-256") is not None \
                        and deliveries.replayed(delivery.strip()[:100]):
                    self.reply(200, {"ok": True, "note": "delivery seen before: ignored"})
                    return
                if not bucket.take():
                    self.reply(429, {"error": "too many requests"}, {"Retry-After": str(bucket.retry_after())})
                    return
                if code != 202:
                    self.reply(code, {"ok": True, "note": what} if code != 204 else None)
                    return
                paused = pause.read(workdir)
                if paused and not paused.get("newer_than"):
                    self.reply(409, {"error": "deploys are paused (%s); `dewy resume` first" % (
                        paused.get("reason") or "no reason given")})
                    return
                poke()
                log.info("trigger: polling now (%s from %s)", what, self.client_address[0])
                self.reply(202, {"ok": True, "note": "polling the registry now; it decides what is deployed"})

            def do_GET(self):  # noqa: N802
                self.reply(405, {"error": "POST /deploy"}, {"Allow": "POST"})

            def reply(self, code, data, headers=None):
                body = (json.dumps(data) + "\n").encode() if data is not None else b""
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if body:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002 — our own lines say what matters
                pass

        host, port = parse_address(config.trigger)

        class Server(ThreadingHTTPServer):
            # http.server speaks IPv4 only unless told: `[::1]:P` / `[::]:P` need an IPv6 socket (like metrics').
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

            def process_request(self, request, client_address):
                if not self.slots.acquire(blocking=False):  # at the cap: not one more thread or fd held
                    self.shutdown_request(request)
                    return
                super().process_request(request, client_address)

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    self.slots.release()

            def handle_error(self, request, client_address):
                log.info("trigger: a request from %s failed", client_address[0] if client_address else "?")

        try:
            server = Server((host, port), Handler)
        except OSError as exc:
            log.error("cannot serve deploy triggers on %s: %s", config.trigger, exc)
            return
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="dewy-trigger", daemon=True).start()
        self.server, self.key = server, key
        log.info("serving deploy triggers on http://%s/deploy", config.trigger)

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.server = self.key = None
