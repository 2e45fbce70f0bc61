"""A stand-in Consul agent for the tests: the KV and session HTTP API as Consul documents it.

No Consul server can be installed here, so this speaks the documented endpoints, parameters, status codes
and headers (https://developer.hashicorp.com/consul/api-docs/kv and .../session) and dewy's production
client runs unchanged against it:

- `GET /v1/kv/<key>`: `[{"CreateIndex", "ModifyIndex", "LockIndex", "Key", "Flags", "Value" (base64 or
  null), "Session"?}]`, 404 when absent; `?recurse` (every key under the prefix), `?keys` (names only,
  `?separator=` folds deeper levels), `?raw` (the bare value); `?index=N&wait=5s` blocks until the index
  passes N. Every GET answers with `X-Consul-Index`.
- `PUT /v1/kv/<key>` (body = value, at most 512 KiB, else 413): `?flags=`, `?cas=N` (0: only when
  absent; else only when ModifyIndex == N), `?acquire=<session>` / `?release=<session>`; answers `true`/`false`.
- `DELETE /v1/kv/<key>`: `?recurse`, `?cas=N`; answers `true`/`false`.
- `PUT /v1/session/create` (JSON `Name`, `TTL` 10s..86400s, `LockDelay`, `Behavior` release|delete) ->
  `{"ID"}`; `PUT /v1/session/destroy/<id>`, `PUT /v1/session/renew/<id>`, `GET /v1/session/info/<id>`,
  `GET /v1/session/list`. A session whose TTL passes is invalidated: its locks are released (or its keys
  deleted), and the lock-delay keeps them from being acquired again for a while.
- ACLs: when started with a token, every request needs it (`X-Consul-Token`, `Authorization: Bearer`, or
  `?token=`): none -> 403 `Permission denied`, another -> 403 `ACL not found`.

`requests_seen` records (method, path, query, token) for the tests.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_VALUE = 512 * 1024
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _seconds(text: str, default: float) -> float:
    match = _DURATION.match((text or "").strip())
    if not match:
        return default
    return float(match.group(1)) * _UNITS[match.group(2)]


class _InvalidSession(Exception):
    """?acquire= names a session that does not exist."""


class ConsulStub:
    """An in-process Consul agent on 127.0.0.1:<free port>; a context manager (or start()/stop())."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.kv: dict = {}           # key -> entry dict (Consul's field names)
        self.sessions: dict = {}     # id -> session dict (+ "_expires")
        self.lock_delay_until: dict = {}  # key -> monotonic time before which acquire fails
        self.index = 1
        self.cond = threading.Condition()
        self.requests_seen: list = []
        self.server = None
        self.thread = None

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def address(self) -> str:
        """host:port, as CONSUL_HTTP_ADDR takes it."""
        return "127.0.0.1:%d" % self.port

    def start(self) -> "ConsulStub":
        stub = self

        class Handler(_Handler):
            pass
        Handler.stub = stub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- state (called with self.cond held) --------------------------------------------------------

    def _bump(self) -> int:
        self.index += 1
        self.cond.notify_all()
        return self.index

    def expire_sessions(self) -> None:
        """Invalidate sessions whose TTL has passed (Consul's TTL timer)."""
        now = time.monotonic()
        for sid in [s for s, sess in self.sessions.items() if sess["_expires"] and sess["_expires"] <= now]:
            self._invalidate(sid)

    def _invalidate(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        delay = _seconds(session.get("LockDelay", "15s"), 15.0)
        for key, entry in list(self.kv.items()):
            if entry.get("Session") == sid:
                self.lock_delay_until[key] = time.monotonic() + delay
                if session.get("Behavior") == "delete":
                    del self.kv[key]
                else:
                    del entry["Session"]
                    entry["ModifyIndex"] = self._bump()
        self._bump()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: ConsulStub = None

    def log_message(self, *args):  # quiet: the tests read requests_seen instead
        pass

    # --- plumbing -------------------------------------------------------------------------------

    def _send(self, status: int, body, content_type: str = "application/json", index: int | None = None) -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body) if content_type == "application/json"
                                                      else str(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if index is not None:
            self.send_header("X-Consul-Index", str(index))
            self.send_header("X-Consul-KnownLeader", "true")
            self.send_header("X-Consul-LastContact", "0")
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _parse(self):
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        return urllib.parse.unquote(parts.path), query

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorised(self, query: dict) -> bool:
        token = self.headers.get("X-Consul-Token") or query.get("token")
        auth = self.headers.get("Authorization") or ""
        if not token and auth.startswith("Bearer "):
            token = auth[len("Bearer "):]
        self.stub.requests_seen.append((self.command, self._parse()[0], dict(query), token))
        if self.stub.token is None:
            return True
        if not token:
            self._text(403, "Permission denied")
            return False
        if token != self.stub.token:
            self._text(403, "ACL not found")
            return False
        return True

    def _dispatch(self) -> None:
        path, query = self._parse()
        body = self._body() if self.command in ("PUT", "POST") else b""
        if not self._authorised(query):
            return
        with self.stub.cond:
            self.stub.expire_sessions()
        if path.startswith("/v1/kv/"):
            return self._kv(path[len("/v1/kv/"):], query, body)
        if path.startswith("/v1/session/"):
            return self._session(path[len("/v1/session/"):], query, body)
        self._text(404, "Invalid URL path: not a recognized HTTP API endpoint")

    do_GET = do_PUT = do_DELETE = do_POST = _dispatch

    # --- KV -------------------------------------------------------------------------------------

    def _kv(self, key: str, query: dict, body: bytes) -> None:
        stub = self.stub
        if self.command == "GET":
            return self._kv_get(key, query)
        if self.command in ("PUT", "POST"):
            if len(body) > MAX_VALUE:
                return self._text(413, "Request body(%d bytes) too large, max size: %d bytes. See "
                                       "https://developer.hashicorp.com/consul/docs/agent/config/config-files"
                                       "#kv_max_value_size." % (len(body), MAX_VALUE))
            try:
                flags = int(query.get("flags", "0") or "0")
                cas = int(query["cas"]) if "cas" in query else None
            except ValueError:
                return self._text(400, "Invalid flags or cas value")
            with stub.cond:
                try:
                    done = self._kv_put(key, body, flags, cas, query)
                except _InvalidSession as exc:
                    return self._text(500, str(exc))  # Consul: 500 "invalid session"
            return self._send(200, done)
        if self.command == "DELETE":
            with stub.cond:
                if "cas" in query:
                    entry = stub.kv.get(key)
                    if entry is None or entry["ModifyIndex"] != int(query["cas"] or 0):
                        return self._send(200, False)
                if "recurse" in query:
                    for name in [k for k in stub.kv if k.startswith(key)]:
                        del stub.kv[name]
                else:
                    stub.kv.pop(key, None)
                stub._bump()
                return self._send(200, True)
        self._text(405, "method %s not allowed" % self.command)

    def _kv_put(self, key: str, body: bytes, flags: int, cas: int | None, query: dict) -> bool:
        stub = self.stub
        entry = stub.kv.get(key)
        if cas is not None:
            if cas == 0 and entry is not None:
                return False
            if cas != 0 and (entry is None or entry["ModifyIndex"] != cas):
                return False
        if "acquire" in query:
            sid = query["acquire"]
            if sid not in stub.sessions:
                raise _InvalidSession("invalid session \"%s\"" % sid)
            if entry is not None and entry.get("Session") not in (None, sid):
                return False
            if time.monotonic() < stub.lock_delay_until.get(key, 0):
                return False
        if "release" in query:
            sid = query["release"]
            if entry is None or entry.get("Session") != sid:
                return False
        index = stub._bump()
        if entry is None:
            entry = stub.kv[key] = {"Key": key, "CreateIndex": index, "LockIndex": 0}
        entry.update(ModifyIndex=index, Flags=flags, Value=base64.b64encode(body).decode() if body else None)
        if "acquire" in query and entry.get("Session") != query["acquire"]:
            entry["Session"] = query["acquire"]
            entry["LockIndex"] += 1
        if "release" in query:
            entry.pop("Session", None)
        return True

    def _kv_get(self, key: str, query: dict) -> None:
        stub = self.stub
        with stub.cond:
            if "index" in query:
                # A blocking query: wait until something changes past the index the client has seen.
                try:
                    seen = int(query["index"])
                except ValueError:
                    return self._text(400, "Invalid index")
                deadline = time.monotonic() + min(_seconds(query.get("wait", "5m"), 300.0), 600.0)
                while stub.index <= seen and time.monotonic() < deadline:
                    stub.cond.wait(max(0.0, deadline - time.monotonic()))
            if "recurse" in query or "keys" in query:
                found = sorted(k for k in stub.kv if k.startswith(key))
            else:
                found = [key] if key in stub.kv else []
            entries = [dict(stub.kv[k]) for k in found]
            index = max([e["ModifyIndex"] for e in entries] or [stub.index])
        if not entries:
            return self._send(404, b"", "text/plain", index=index)
        if "keys" in query:
            separator = query.get("separator")
            names = []
            for name in found:
                if separator:
                    cut = name.find(separator, len(key))
                    if cut != -1:
                        name = name[:cut + len(separator)]
                if name not in names:
                    names.append(name)
            return self._send(200, names, index=index)
        if "raw" in query:
            return self._send(200, base64.b64decode(entries[0]["Value"] or ""), "application/octet-stream", index)
        return self._send(200, entries, index=index)

    # --- sessions -------------------------------------------------------------------------------

    def _session(self, rest: str, query: dict, body: bytes) -> None:
        stub = self.stub
        action, _, sid = rest.partition("/")
        with stub.cond:
            if action == "create" and self.command == "PUT":
                try:
                    spec = json.loads(body or b"{}")
                except ValueError:
                    return self._text(400, "Request decode failed")
                ttl = spec.get("TTL") or ""
                seconds = _seconds(ttl, -1.0) if ttl else 0.0
                if ttl and not 10.0 <= seconds <= 86400.0:
                    return self._text(400, "Invalid Session TTL '%s', must be between [10s=24h0m0s]" % ttl)
                if spec.get("Behavior", "release") not in ("release", "delete"):
                    return self._text(400, "Invalid Behavior setting '%s'" % spec.get("Behavior"))
                sid = str(uuid.uuid4())
                stub.sessions[sid] = {
                    "ID": sid, "Name": spec.get("Name", ""), "Node": "stub", "TTL": ttl,
                    "LockDelay": spec.get("LockDelay", "15s"), "Behavior": spec.get("Behavior", "release"),
                    "CreateIndex": stub._bump(), "_expires": time.monotonic() + seconds if seconds else None,
                    "_ttl": seconds}
                return self._send(200, {"ID": sid})
            if action == "destroy" and self.command == "PUT":
                stub._invalidate(sid)
                return self._send(200, True)
            if action == "renew" and self.command == "PUT":
                session = stub.sessions.get(sid)
                if session is None:
                    return self._text(404, "Session id '%s' not found" % sid)
                if session["_ttl"]:
                    session["_expires"] = time.monotonic() + session["_ttl"]
                return self._send(200, [self._public(session)], index=stub.index)
            if action == "info" and self.command == "GET":
                session = stub.sessions.get(sid)
                return self._send(200, [self._public(session)] if session else [], index=stub.index)
            if action == "list" and self.command == "GET":
                return self._send(200, [self._public(s) for s in stub.sessions.values()], index=stub.index)
        self._text(404, "Invalid URL path: not a recognized HTTP API endpoint")

    @staticmethod
    def _public(session: dict) -> dict:
        return {k: v for k, v in session.items() if not k.startswith("_")}
