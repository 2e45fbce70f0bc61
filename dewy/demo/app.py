#!/usr/bin/env python3
"""dewy's sample app: a tiny HTTP/1.0 server that runs on sockets inherited from a supervisor.

This file is shipped verbatim inside release tarballs (see `build_release`), so it uses the
standard library only and runs on any Python 3.8+ as `python3 app.py`.

Sockets: systemd socket activation (`LISTEN_FDS` with `LISTEN_PID` == this pid, fds 3..) or, failing
that, Server::Starter's `SERVER_STARTER_PORT` (`addr=fd;addr=fd`). Every inherited socket is served
(TCP and unix). With neither variable set the app exits 1.

Endpoints (one thread per connection, `Connection: close`):
  GET /            200 "<version>\\n" (the VERSION file next to this script)
  GET /env         JSON: the SERVER_STARTER_*/LISTEN_*/DEWY_*/NOTIFY_SOCKET variables, the pid,
                   and the fds that were open when the app started (`fds`) — what it inherited
  GET /slow?ms=N   sleeps N ms, then answers like GET /
  GET /healthz     200 "ok" (503 while an unhealthy-* switch says so)

Stop: on SIGTERM/SIGINT it closes its copies of the listeners at once (the supervisor keeps the
sockets open, so queued connections go to the next generation), finishes every connection it has
already accepted, and exits 0.

Readiness: with `NOTIFY_SOCKET` set it sends `READY=1` once it is accepting.

Misbehaviour for tests, from a `BEHAVIOUR` file next to this script (so a release carries it) and/or
`$DEWY_TESTAPP_BEHAVIOUR`, comma- or space-separated:
  crash-at-start        exit 3 before touching the sockets
  never-ready           serve, but never send READY=1
  crash-after:SECONDS   serve for SECONDS, then stop accepting, finish what it accepted and exit 4
                        (an app that dies on its own; draining keeps the load tests' counts exact)
  slow-start:SECONDS    sleep SECONDS before accepting / READY=1
  unhealthy-for:SECONDS   GET /healthz answers 503 for SECONDS after the start, then 200
  unhealthy-after:SECONDS GET /healthz answers 200 for SECONDS after the start, then 503 (a wedged app)
  linger:SECONDS        on a stop signal keep accepting for SECONDS before closing the listeners (like an
                        app with a shutdown delay, a load balancer's deregistration wait)
  answer-on-first-read  answer 200 right after the first read of a connection, whatever it held (the request
                        may not be complete: servers that do not wait for the blank line ending it)
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import selectors
import signal
import socket
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

EXIT_OK = 0
EXIT_NO_SOCKETS = 1
EXIT_CRASH_AT_START = 3
EXIT_CRASH_AFTER = 4

ENV_PREFIXES = ("SERVER_STARTER_", "LISTEN_", "DEWY_")
ENV_NAMES = ("NOTIFY_SOCKET",)
BEHAVIOUR_ENV = "DEWY_TESTAPP_BEHAVIOUR"
KNOWN_BEHAVIOURS = {"crash-at-start": False, "never-ready": False,
                    "crash-after": True, "slow-start": True,
                    "unhealthy-for": True, "unhealthy-after": True, "linger": True,
                    "answer-on-first-read": False}  # name -> takes seconds
CONNECTION_TIMEOUT = 30.0  # a silent client must not hold up a graceful stop forever
ACCEPT_BATCH = 16  # accept at most this many per wake-up, leaving the rest to a sibling generation


class StartError(Exception):
    """The app cannot start; the message says why (printed, then exit EXIT_NO_SOCKETS)."""


def log(msg: str) -> None:
    """One line on stderr, which the supervisor collects."""
    sys.stderr.write("sample-app[%d]: %s\n" % (os.getpid(), msg))
    sys.stderr.flush()


def open_fds() -> list:
    """The descriptors open right now, without the one used to list them."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc (not Linux): probe a reasonable range instead
        names = [str(fd) for fd in range(256)]
    fds = []
    for name in names:
        fd = int(name)
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:  # the directory listdir had open, closed again by now
            continue
        fds.append(fd)
    return sorted(fds)


def fd_target(fd: int) -> str:
    """What a descriptor refers to (`socket:[123]`, `/dev/null`), for leak reports."""
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return "?"


def parse_behaviour(text: str) -> dict:
    """{name: seconds or True} from `crash-after:0.5, never-ready`; StartError on an unknown name."""
    result = {}
    for token in text.replace(",", " ").split():
        name, sep, value = token.partition(":")
        if name not in KNOWN_BEHAVIOURS:
            raise StartError("unknown behaviour %r (known: %s)" % (name, ", ".join(sorted(KNOWN_BEHAVIOURS))))
        if KNOWN_BEHAVIOURS[name]:
            try:
                result[name] = float(value.rstrip("s"))
            except ValueError:
                raise StartError("behaviour %s needs seconds, e.g. %s:0.5 (got %r)" % (name, name, token)) from None
        else:
            result[name] = True
    return result


def read_behaviour(here: str, environ) -> dict:
    """The misbehaviour switches from the BEHAVIOUR file next to the script plus the environment."""
    text = environ.get(BEHAVIOUR_ENV, "")
    try:
        with open(os.path.join(here, "BEHAVIOUR")) as fh:
            text = fh.read() + " " + text
    except FileNotFoundError:
        pass
    return parse_behaviour(text)


def read_version(here: str) -> str:
    """The release's version: the VERSION file next to the script ("unknown" without one)."""
    try:
        with open(os.path.join(here, "VERSION")) as fh:
            return fh.read().strip() or "unknown"
    except FileNotFoundError:
        return "unknown"


def _wrap(fd: int, name: str) -> socket.socket:
    try:
        # fileno= asks the kernel for family and type, so TCP v4/v6 and unix sockets all work.
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise StartError("inherited descriptor %d (%s) is not a socket: %s" % (fd, name, exc.strerror)) from None


def inherited_sockets(environ) -> list:
    """[(name, socket)] from LISTEN_FDS (when LISTEN_PID is us) or SERVER_STARTER_PORT."""
    count, pid = environ.get("LISTEN_FDS"), environ.get("LISTEN_PID")
    if count and pid == str(os.getpid()):
        try:
            n = int(count)
        except ValueError:
            raise StartError("LISTEN_FDS=%r is not a number" % count) from None
        names = environ.get("LISTEN_FDNAMES", "").split(":")
        return [(names[i] if i < len(names) and names[i] else "fd%d" % (3 + i), _wrap(3 + i, "LISTEN_FDS"))
                for i in range(n)]
    ports = environ.get("SERVER_STARTER_PORT")
    if ports:
        result = []
        for item in ports.split(";"):
            if not item:
                continue
            # rpartition: a unix socket path may itself contain '='.
            addr, sep, fd = item.rpartition("=")
            if not sep or not fd.isdigit():
                raise StartError("SERVER_STARTER_PORT entry %r is not addr=fd" % item)
            result.append((addr, _wrap(int(fd), addr)))
        return result
    why = ""
    if count:
        why = " (LISTEN_FDS is set but LISTEN_PID=%s is not this process, %d)" % (pid, os.getpid())
    raise StartError("no sockets to serve: run me under dewy (or systemd/start_server), which sets "
                     "LISTEN_FDS+LISTEN_PID or SERVER_STARTER_PORT%s" % why)


def notify_ready(environ, text: str) -> bool:
    """Send READY=1 to $NOTIFY_SOCKET (a leading '@' is the abstract namespace); False if unset/failed."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.sendto(("READY=1\nSTATUS=%s" % text).encode(), address)
        return True
    except OSError as exc:
        log("cannot send READY=1 to %s: %s" % (path, exc))
        return False
    finally:
        sock.close()


class Handler(BaseHTTPRequestHandler):
    """Answers one request per connection (HTTP/1.0, no keep-alive)."""

    protocol_version = "HTTP/1.0"
    server_version = "dewy-sample-app"
    timeout = CONNECTION_TIMEOUT

    def do_GET(self):  # noqa: N802 — the name http.server dispatches to
        """Route GET /, /env, /healthz, /moved (302) and /slow."""
        url = urlsplit(self.path)
        app = self.server
        if url.path == "/":
            self._reply(200, app.version + "\n")
        elif url.path == "/env":
            self._reply(200, json.dumps(app.describe(), sort_keys=True) + "\n", "application/json")
        elif url.path == "/healthz":
            up = time.monotonic() - app.started
            sick = up < app.behaviour.get("unhealthy-for", 0) or up >= app.behaviour.get("unhealthy-after", 1e18)
            self._reply(503 if sick else 200, "unhealthy\n" if sick else "ok\n")
        elif url.path == "/moved":  # a redirect, which readiness checks count as healthy (as Dewy does)
            self._reply(302, "see /\n", location="/")
        elif url.path == "/slow":
            try:
                ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            except ValueError:
                self._reply(400, "ms must be an integer\n")
                return
            time.sleep(ms / 1000.0)
            self._reply(200, app.version + "\n")
        else:
            self._reply(404, "not found\n")

    def _reply(self, code: int, body: str, ctype: str = "text/plain; charset=utf-8", location: str = "") -> None:
        data = body.encode()
        self.send_response(code)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def address_string(self):
        """The peer, also for unix sockets (whose address is an empty string)."""
        return str(self.client_address[0]) if isinstance(self.client_address, tuple) else "unix"

    def log_message(self, format, *args):  # noqa: A002 — signature fixed by http.server
        """Stay quiet: load tests send thousands of requests into the supervisor's log."""


class App:
    """The accept loop: a selector over the listeners and a signal wake-up pipe, one thread per connection."""

    def __init__(self, listeners: list, version: str, behaviour: dict, startup_fds: list, environ: dict,
                 fd_targets: dict | None = None):
        self.listeners = listeners  # [(name, socket)]
        self.version = version
        self.behaviour = behaviour
        self.started = time.monotonic()
        self.startup_fds = startup_fds
        self.fd_targets = fd_targets or {}
        self.environ = environ
        self.stop_signal = None  # set by the signal handler; the loop does the work
        self.threads = set()
        self.lock = threading.Lock()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)

    def describe(self) -> dict:
        """What GET /env reports."""
        return {
            "pid": os.getpid(),
            "version": self.version,
            "env": {k: v for k, v in self.environ.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES},
            "fds": self.startup_fds,
            "fd_targets": self.fd_targets,
            "listeners": [name for name, _ in self.listeners],
            "behaviour": self.behaviour,
        }

    def install_signals(self) -> None:
        """TERM/INT only record the signal; set_wakeup_fd wakes the selector even mid-select."""
        # Why not server.shutdown() in the handler: handlers run in the main thread, which is the
        # one shutdown() would wait for — a deadlock. Here the loop notices the flag instead.
        signal.set_wakeup_fd(self.wake_w)

        def handler(signum, frame):
            if self.stop_signal is None:
                self.stop_signal = signum

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on a stop signal; True if it slept the whole time."""
        deadline = time.monotonic() + seconds
        while self.stop_signal is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self._wait_wake(left)
        return False

    def _wait_wake(self, timeout: float) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.wake_r, selectors.EVENT_READ)
            sel.select(timeout)
        finally:
            sel.close()
        self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def run(self) -> int:
        """Serve until a stop signal (exit 0) or the crash-after deadline (exit 4)."""
        self.install_signals()
        if "slow-start" in self.behaviour:
            log("slow-start: sleeping %.2fs before accepting" % self.behaviour["slow-start"])
            if not self.sleep(self.behaviour["slow-start"]):
                return self.stop("stopped during slow start")
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        for name, sock in self.listeners:
            # O_NONBLOCK is shared with the other generations' copies of the socket; they must
            # cope with EAGAIN anyway, since any of them may win a connection we were woken for.
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, name)
        log("version %s serving %s (generation %s)" % (
            self.version, ", ".join(name for name, _ in self.listeners),
            self.environ.get("SERVER_STARTER_GENERATION", "?")))
        if "never-ready" in self.behaviour:
            log("never-ready: not sending READY=1")
        else:
            notify_ready(self.environ, "serving version %s" % self.version)
        crash_at = None
        if "crash-after" in self.behaviour:
            crash_at = time.monotonic() + self.behaviour["crash-after"]
        linger_until = None
        while self.accepting():
            if self.stop_signal is not None and linger_until is None:
                linger_until = time.monotonic() + self.behaviour["linger"]
                log("linger: accepting for %.2fs more after %s" % (
                    self.behaviour["linger"], signal.Signals(self.stop_signal).name))
            ends = [t for t in (crash_at, linger_until) if t is not None]
            timeout = max(0.0, min(ends) - time.monotonic()) if ends else None
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    self._drain_wake()
                elif self.accepting():  # a signal in the same wake-up wins over new work
                    self._accept(key.fileobj)
            if linger_until is not None and time.monotonic() >= linger_until:
                break
            if crash_at is not None and time.monotonic() >= crash_at:
                self.stop("crash-after: giving up")
                return EXIT_CRASH_AFTER
        return self.stop("got %s" % signal.Signals(self.stop_signal).name)

    def accepting(self) -> bool:
        """Whether new connections are still taken: until a stop signal (or, with linger, for a while after)."""
        return self.stop_signal is None or "linger" in self.behaviour

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self.accepting():
                return
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another generation took it, or nothing left
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while queued
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    log("accept: %s" % exc)
                    return
                raise
            if "answer-on-first-read" in self.behaviour:
                self._answer_first_read(conn)
                continue
            thread = threading.Thread(target=self._serve, args=(conn, addr), daemon=False)
            with self.lock:
                self.threads.add(thread)
            thread.start()

    def _answer_first_read(self, conn: socket.socket) -> None:
        """Behaviour answer-on-first-read: at once, in the accept loop, after one read of whatever arrived."""
        try:
            conn.settimeout(5.0)
            conn.recv(4096)
            body = (self.version + "\n").encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            conn.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log("connection error: %r" % exc)
        finally:
            conn.close()

    def _serve(self, conn: socket.socket, addr) -> None:
        try:
            conn.settimeout(CONNECTION_TIMEOUT)
            Handler(conn, addr, self)
        except Exception as exc:  # noqa: BLE001 — one bad connection must not end the app
            log("connection error: %r" % exc)
        finally:
            try:
                # Half-close first so the client reads the whole answer rather than a reset.
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()
            with self.lock:
                self.threads.discard(threading.current_thread())

    def stop(self, why: str) -> int:
        """Stop accepting at once, finish the connections already accepted, return EXIT_OK."""
        for _, sock in self.listeners:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()  # only our copy: the supervisor still holds the socket
        with self.lock:
            pending = list(self.threads)
        log("%s: stopped accepting, finishing %d connection(s)" % (why, len(pending)))
        for thread in pending:
            thread.join()
        log("stopped")
        return EXIT_OK


def main() -> int:
    """Run the sample app; the exit code says how it ended."""
    # First thing, before this process opens anything: what did the supervisor hand us?
    startup_fds = open_fds()
    fd_targets = {str(fd): fd_target(fd) for fd in startup_fds}
    environ = dict(os.environ)
    # Resolve the script's real directory now: `current` may point at another release later.
    here = os.path.dirname(os.path.realpath(__file__))
    try:
        behaviour = read_behaviour(here, environ)
        if "crash-at-start" in behaviour:
            log("crash-at-start: exiting with %d" % EXIT_CRASH_AT_START)
            return EXIT_CRASH_AT_START
        listeners = inherited_sockets(environ)
    except StartError as exc:
        log("cannot start: %s" % exc)
        return EXIT_NO_SOCKETS
    return App(listeners, read_version(here), behaviour, startup_fds, environ, fd_targets).run()


def build_release(dest_tar_gz: str, version: str, behaviour: str = "") -> None:
    """Write a release tarball of this app: app.py (0755), VERSION and, if given, BEHAVIOUR.

    Run it with `python3 current/app.py` (any Python 3.8+; see examples/dewy.ini). The file is
    written next to dest and renamed into place, so a poller never sees half a tarball.
    """
    if behaviour:
        parse_behaviour(behaviour)  # fail here, not inside a deployed release
    source = __file__
    if not source.endswith(".py"):
        source = source[: source.rfind(".py") + 3]
    loader = globals().get("__loader__")
    if os.path.isfile(source) or not hasattr(loader, "get_data"):
        with open(source, "rb") as fh:
            code = fh.read()
    else:
        code = loader.get_data(source)  # imported from a zipapp: this file is inside the zip
    files = [("app.py", code, 0o755), ("VERSION", (version + "\n").encode(), 0o644)]
    if behaviour:
        files.append(("BEHAVIOUR", (behaviour + "\n").encode(), 0o644))
    tmp = "%s.%d.tmp" % (dest_tar_gz, os.getpid())
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            now = time.time()
            for name, data, mode in files:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, now
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, dest_tar_gz)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


if __name__ == "__main__":
    sys.exit(main())
