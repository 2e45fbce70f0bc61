"""A stand-in for GitHub's REST API (releases, assets, uploads, App tokens) on 127.0.0.1, for tests.

No real GitHub is reachable from the tests, so this speaks what GitHub documents for the endpoints dewy
uses, with GitHub's status codes and headers:

- `GET {prefix}/repos/{o}/{r}/releases?per_page=&page=` (default 30, at most 100 a page; newest created
  first; drafts only for an authenticated caller) with `Link` pagination pointing at
  `/repositories/{id}/releases?...` as GitHub does; `ETag` on every answer and 304 for a matching
  `If-None-Match` (not counted against the rate limit);
- `X-RateLimit-Limit/Remaining/Reset/Used/Resource` on every API answer; 403 once the hour's requests are
  used up; 403/429 with `Retry-After` on demand (`fail_next`); 5xx on demand;
- `GET .../releases/tags/{tag}`; `GET .../releases/assets/{id}` answers 302 to a signed URL on a second
  port (the storage server) for `Accept: application/octet-stream`, the asset JSON otherwise;
- the storage server refuses any request carrying an `Authorization` header (400, as S3 does for a
  presigned URL plus a header) and records it; it honours `Range` (206) and can cut a download short;
- `POST /repos/{o}/{r}/releases/{id}/assets?name=` on a third port (uploads.github.com's stand-in);
- `POST {prefix}/app/installations/{id}/access_tokens`: verifies the App's RS256 JWT with its public key
  (iss, iat, exp at most 10 minutes ahead) and issues an installation token with `expires_at`.

Every request is recorded (`stub.requests`) so tests can assert what dewy sent.
Servers are threads in the test process; `close()` stops them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt


def iso(epoch: float) -> str:
    """Epoch seconds as GitHub writes times: 2026-11-26T06:50:12Z."""
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Recorded:
    """One request a stub server received."""

    server: str               # "api", "storage" or "uploads"
    method: str
    path: str                 # without the query
    query: dict
    headers: dict             # lower-case names
    status: int = 0           # what the stub answered
    body: bytes = b""


@dataclass
class Failure:
    """A canned failure for the next matching API requests (fail_next)."""

    status: int
    retry_after: str | None
    remaining_zero: bool
    message: str
    count: int


@dataclass
class Repo:
    owner: str
    name: str
    id: int
    private: bool = False
    releases: list = field(default_factory=list)   # newest created first, as GitHub lists them


class GitHubStub:
    """Three HTTP servers (API, storage, uploads) and the state behind them."""

    def __init__(self, prefix: str = "", tokens=("ghp_stubtoken0123456789",), app_id: int | None = None,
                 app_public_key: str | None = None, installation_id: int = 4242, rate_limit: int = 5000):
        self.prefix = prefix.rstrip("/")
        self.tokens = set(tokens)
        self.app_id, self.app_public_key, self.installation_id = app_id, app_public_key, installation_id
        self.token_lifetime = 3600.0           # seconds an installation token is valid
        self.installation_tokens = {}          # token -> expires (epoch)
        self.jwts = []                         # the decoded JWT payloads the token endpoint accepted
        self.rate_limit = rate_limit
        self.rate_remaining = rate_limit
        self.rate_reset = int(time.time()) + 3600
        self.failures: list[Failure] = []
        self.cut_after: int | None = None       # the next storage download stops after this many bytes
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self.repos: dict = {}
        self.blobs: dict = {}                   # asset id -> bytes
        self._next_id = 1000
        self._servers = []
        self._connections = set()                # open client sockets, cut by close()
        self.api = self._serve("api")
        self.storage = self._serve("storage")
        self.uploads = self._serve("uploads")

    # ------------------------------------------------------------------ lifecycle
    def _serve(self, role: str):
        stub = self

        class Handler(_Handler):
            pass

        Handler.stub, Handler.role = stub, role
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="ghstub-" + role, daemon=True)
        thread.start()
        self._servers.append((server, thread))
        return server

    def close(self) -> None:
        """Stop the servers and close their sockets."""
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(5)
        self._servers = []
        # Keep-alive connections outlive the listening socket: cut them, as a server going down does.
        with self.lock:
            connections, self._connections = list(self._connections), set()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def api_url(self) -> str:
        """What GITHUB_API_URL should be for dewy to talk to this stub."""
        return "http://127.0.0.1:%d%s" % (self.api.server_address[1], self.prefix)

    def base(self, server) -> str:
        return "http://127.0.0.1:%d" % server.server_address[1]

    # ------------------------------------------------------------------ state
    def _id(self) -> int:
        with self.lock:
            self._next_id += 1
            return self._next_id

    def repo(self, owner: str, name: str, private: bool = False) -> Repo:
        """The repository owner/name (created on first use)."""
        with self.lock:
            key = (owner.lower(), name.lower())
            if key not in self.repos:
                self.repos[key] = Repo(owner, name, self._id(), private)
            return self.repos[key]

    def publish(self, owner: str, repo: str, tag: str, assets: dict | None = None, draft: bool = False,
                prerelease: bool = False, digests: bool = True, published_at: float | None = None) -> dict:
        """Create a release (newest created first) with assets {name: bytes}; returns its JSON.

        digests: GitHub's `digest` field on each asset (False: null, as for assets uploaded before 2025).
        """
        r = self.repo(owner, repo)
        rid = self._id()
        now = time.time()
        release = {
            "id": rid, "tag_name": tag, "name": tag, "draft": draft, "prerelease": prerelease,
            "target_commitish": "main", "body": "",
            "created_at": iso(now), "published_at": None if draft else iso(published_at or now),
            "author": {"login": "octocat", "id": 1},
            "upload_url": "%s/repos/%s/%s/releases/%d/assets{?name,label}" % (self.base(self.uploads), owner, repo, rid),
            "url": "%s/repos/%s/%s/releases/%d" % (self.api_url, owner, repo, rid),
            "assets_url": "%s/repos/%s/%s/releases/%d/assets" % (self.api_url, owner, repo, rid),
            "html_url": "https://github.example/%s/%s/releases/tag/%s" % (owner, repo, tag),
            "tarball_url": "%s/repos/%s/%s/tarball/%s" % (self.api_url, owner, repo, tag),
            "zipball_url": "%s/repos/%s/%s/zipball/%s" % (self.api_url, owner, repo, tag),
            "assets": [],
        }
        with self.lock:
            r.releases.insert(0, release)
        for name, data in (assets or {}).items():
            self.add_asset(owner, repo, tag, name, data, digest=digests)
        return release

    def release(self, owner: str, repo: str, tag: str) -> dict:
        """The JSON of the release tagged tag (KeyError if none)."""
        for rel in self.repo(owner, repo).releases:
            if rel["tag_name"] == tag:
                return rel
        raise KeyError(tag)

    def add_asset(self, owner: str, repo: str, tag: str, name: str, data: bytes, digest=True,
                  content_type: str = "application/octet-stream") -> dict:
        """Upload an asset to a release; digest True: the real sha256, a string: that digest, False: null."""
        rel = self.release(owner, repo, tag)
        aid = self._id()
        now = iso(time.time())
        if digest is True:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        asset = {
            "id": aid, "name": name, "label": "", "content_type": content_type, "state": "uploaded",
            "size": len(data), "digest": digest or None, "download_count": 0, "created_at": now, "updated_at": now,
            "url": "%s/repos/%s/%s/releases/assets/%d" % (self.api_url, owner, repo, aid),
            "browser_download_url": "https://github.example/%s/%s/releases/download/%s/%s" % (owner, repo, tag, name),
            "uploader": {"login": "octocat", "id": 1},
        }
        with self.lock:
            self.blobs[aid] = data
            rel["assets"].append(asset)
        return asset

    def asset_names(self, owner: str, repo: str, tag: str) -> list:
        """Names of a release's assets."""
        return [a["name"] for a in self.release(owner, repo, tag)["assets"]]

    def asset_bytes(self, owner: str, repo: str, tag: str, name: str) -> bytes:
        """The bytes of a release asset."""
        for a in self.release(owner, repo, tag)["assets"]:
            if a["name"] == name:
                return self.blobs[a["id"]]
        raise KeyError(name)

    def fail_next(self, status: int, count: int = 1, retry_after=None, remaining_zero: bool = False,
                  message: str | None = None) -> None:
        """Answer the next `count` API requests with status (403/429 with Retry-After, 5xx...)."""
        if message is None:
            message = {403: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                       429: "Too many requests"}.get(status, "Server Error")
        with self.lock:
            self.failures.append(Failure(status, None if retry_after is None else str(retry_after),
                                         remaining_zero, message, count))

    def set_rate(self, remaining: int, reset: float | None = None) -> None:
        """Set the hourly budget left and when it resets (epoch seconds)."""
        with self.lock:
            self.rate_remaining = remaining
            if reset is not None:
                self.rate_reset = int(reset)

    # ------------------------------------------------------------------ queries on the record
    def recorded(self, server: str | None = None, method: str | None = None, contains: str = "") -> list:
        """The recorded requests, optionally only those to server / with method / whose path contains text."""
        with self.lock:
            return [r for r in self.requests if (server is None or r.server == server)
                    and (method is None or r.method == method) and contains in r.path]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self.lock:
            self.requests.clear()

    def storage_auth_violations(self) -> list:
        """Storage requests that carried an Authorization header (there must be none)."""
        return [r for r in self.recorded("storage") if "authorization" in r.headers]


class _Handler(BaseHTTPRequestHandler):
    """Routes a request of one of the three servers to the stub's behaviour."""

    stub: GitHubStub
    role: str
    protocol_version = "HTTP/1.1"   # keep-alive, as GitHub: every answer has a Content-Length

    def log_message(self, fmt, *args):  # the record in stub.requests is the log
        pass

    def setup(self):
        super().setup()
        with self.stub.lock:
            self.stub._connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.stub.lock:
                self.stub._connections.discard(self.connection)

    # ---------------------------------------------------------------- plumbing
    def _record(self, body: bytes = b"") -> Recorded:
        parts = urllib.parse.urlsplit(self.path)
        rec = Recorded(self.role, self.command, urllib.parse.unquote(parts.path),
                       dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)),
                       {k.lower(): v for k, v in self.headers.items()}, body=body)
        with self.stub.lock:
            self.stub.requests.append(rec)
        return rec

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, rec: Recorded, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        rec.status = status
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if status != 304:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304 and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, rec, status, data, headers=None):
        self._send(rec, status, json.dumps(data).encode(), headers)

    def do_GET(self):
        rec = self._record()
        getattr(self, "_%s_get" % self.role)(rec)

    def do_POST(self):
        rec = self._record(self._body())
        if self.role == "uploads":
            return self._upload(rec)
        return self._api_post(rec)

    # ---------------------------------------------------------------- API: auth and limits
    def _rate_headers(self, authed: bool) -> dict:
        s = self.stub
        return {"X-RateLimit-Limit": str(s.rate_limit if authed else 60),
                "X-RateLimit-Remaining": str(max(0, s.rate_remaining)),
                "X-RateLimit-Reset": str(s.rate_reset), "X-RateLimit-Used": str(s.rate_limit - max(0, s.rate_remaining)),
                "X-RateLimit-Resource": "core", "X-GitHub-Media-Type": "github.v3; format=json"}

    def _auth(self, rec) -> tuple:
        """(ok, authenticated): ok False means a 401 was sent."""
        value = rec.headers.get("authorization")
        if not value:
            return True, False
        scheme, _, token = value.partition(" ")
        s = self.stub
        valid = scheme.lower() in ("bearer", "token") and (
            token in s.tokens or s.installation_tokens.get(token, 0) > time.time())
        if not valid:
            self._json(rec, 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                                  "status": "401"})
            return False, False
        return True, True

    def _gate(self, rec, conditional_hit=False) -> tuple:
        """Checks every API request goes through: User-Agent, auth, canned failures, the rate limit.

        Returns (ok, authed, headers); when ok is False an answer was already sent.
        """
        s = self.stub
        if not rec.headers.get("user-agent"):
            self._send(rec, 403, b"Request forbidden by administrative rules. Please make sure your request has "
                                 b"a User-Agent header.\n", content_type="text/plain")
            return False, False, {}
        ok, authed = self._auth(rec)
        if not ok:
            return False, False, {}
        with s.lock:
            failure = s.failures[0] if s.failures else None
            if failure is not None:
                failure.count -= 1
                if failure.count <= 0:
                    s.failures.pop(0)
        if failure is not None:
            headers = self._rate_headers(authed)
            if failure.retry_after is not None:
                headers["Retry-After"] = failure.retry_after
            if failure.remaining_zero:
                headers["X-RateLimit-Remaining"] = "0"
            self._json(rec, failure.status, {"message": failure.message,
                                             "documentation_url": "https://docs.github.com/rest"}, headers)
            return False, authed, {}
        with s.lock:
            if time.time() >= s.rate_reset:
                s.rate_remaining, s.rate_reset = s.rate_limit, int(time.time()) + 3600
            if s.rate_remaining <= 0:
                headers = self._rate_headers(authed)
                self._json(rec, 403, {"message": "API rate limit exceeded for 127.0.0.1.",
                                      "documentation_url": "https://docs.github.com/rest/overview/rate-limits"},
                           headers)
                return False, authed, {}
            # A 304 to an authorised request does not count against the limit (GitHub's docs).
            if not (conditional_hit and authed):
                s.rate_remaining -= 1
            return True, authed, self._rate_headers(authed)

    def _route(self, rec) -> tuple:
        """(kind, match groups) of an API path below the prefix."""
        path = rec.path
        prefix = self.stub.prefix
        if prefix:
            if not path.startswith(prefix + "/"):
                return None, ()
            path = path[len(prefix):]
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[0] == "repos" and parts[3] == "releases":
            return "list", (parts[1], parts[2])
        if len(parts) == 3 and parts[0] == "repositories" and parts[2] == "releases":
            return "list-by-id", (parts[1],)
        if len(parts) == 6 and parts[0] == "repos" and parts[3] == "releases" and parts[4] == "tags":
            return "tag", (parts[1], parts[2], parts[5])
        if len(parts) == 6 and parts[0] == "repos" and parts[3] == "releases" and parts[4] == "assets":
            return "asset", (parts[1], parts[2], parts[5])
        if len(parts) == 4 and parts[0] == "app" and parts[1] == "installations" and parts[3] == "access_tokens":
            return "app-token", (parts[2],)
        return None, ()

    def _not_found(self, rec, headers=None):
        self._json(rec, 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest",
                              "status": "404"}, headers)

    def _find_repo(self, owner, name, authed) -> Repo | None:
        repo = self.stub.repos.get((owner.lower(), name.lower()))
        if repo is None or (repo.private and not authed):
            return None  # GitHub hides a private repository behind a 404
        return repo

    # ---------------------------------------------------------------- API: GET
    def _api_get(self, rec):
        kind, args = self._route(rec)
        if kind in ("list", "list-by-id"):
            return self._list(rec, kind, args)
        ok, authed, headers = self._gate(rec)
        if not ok:
            return
        if kind == "tag":
            repo = self._find_repo(args[0], args[1], authed)
            rel = None
            if repo is not None:
                rel = next((r for r in repo.releases if r["tag_name"] == args[2] and not r["draft"]), None)
            return self._json(rec, 200, rel, headers) if rel else self._not_found(rec, headers)
        if kind == "asset":
            repo = self._find_repo(args[0], args[1], authed)
            asset = None
            if repo is not None:
                asset = next((a for r in repo.releases for a in r["assets"] if str(a["id"]) == args[2]), None)
            if asset is None:
                return self._not_found(rec, headers)
            if "application/octet-stream" in rec.headers.get("accept", ""):
                # A short-lived signed URL on the storage host, as GitHub redirects to its object store.
                location = "%s/releases/%s/%d?X-Amz-Expires=300&X-Amz-Signature=%s" % (
                    self.stub.base(self.stub.storage), args[1], asset["id"], secrets.token_hex(16))
                headers["Location"] = location
                return self._send(rec, 302, b"", headers, content_type="text/html;charset=utf-8")
            return self._json(rec, 200, asset, headers)
        return self._not_found(rec, headers)

    def _list(self, rec, kind, args):
        s = self.stub
        with s.lock:
            if kind == "list":
                repo = s.repos.get((args[0].lower(), args[1].lower()))
            else:
                repo = next((r for r in s.repos.values() if str(r.id) == args[0]), None)
        authed = bool(rec.headers.get("authorization"))
        try:
            per_page = min(100, max(1, int(rec.query.get("per_page", "30"))))
            page = max(1, int(rec.query.get("page", "1")))
        except ValueError:
            per_page, page = 30, 1
        releases = []
        if repo is not None and not (repo.private and not authed):
            with s.lock:
                releases = [r for r in repo.releases if authed or not r["draft"]]
        chunk = releases[(page - 1) * per_page: page * per_page]
        body = json.dumps(chunk).encode()
        etag = 'W/"%s"' % hashlib.sha256(body).hexdigest()[:40]
        hit = rec.headers.get("if-none-match") == etag
        ok, authed, headers = self._gate(rec, conditional_hit=hit)
        if not ok:
            return
        if repo is None or (repo.private and not authed):
            return self._not_found(rec, headers)
        last = max(1, (len(releases) + per_page - 1) // per_page)
        links = []
        base = "%s/repositories/%d/releases" % (s.api_url, repo.id)
        if page < last:
            links += ['<%s?per_page=%d&page=%d>; rel="next"' % (base, per_page, page + 1),
                      '<%s?per_page=%d&page=%d>; rel="last"' % (base, per_page, last)]
        if page > 1:
            links += ['<%s?per_page=%d&page=%d>; rel="prev"' % (base, per_page, page - 1),
                      '<%s?per_page=%d&page=1>; rel="first"' % (base, per_page)]
        if links:
            headers["Link"] = ", ".join(links)
        headers["ETag"] = etag
        headers["Cache-Control"] = "private, max-age=60, s-maxage=60"
        headers["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
        if hit:
            return self._send(rec, 304, b"", headers)
        self._send(rec, 200, body, headers)

    # ---------------------------------------------------------------- API: POST (App tokens)
    def _api_post(self, rec):
        kind, args = self._route(rec)
        s = self.stub
        if kind != "app-token":
            return self._not_found(rec)
        scheme, _, token = rec.headers.get("authorization", "").partition(" ")
        if s.app_public_key is None or scheme.lower() != "bearer":
            return self._json(rec, 401, {"message": "A JSON web token could not be decoded"})
        try:
            payload = jwt.decode(token, s.app_public_key, algorithms=["RS256"],
                                 options={"require": ["iat", "exp", "iss"]}, leeway=0)
        except jwt.PyJWTError as exc:
            return self._json(rec, 401, {"message": "A JSON web token could not be decoded (%s)" % type(exc).__name__})
        now = time.time()
        if str(payload["iss"]) != str(s.app_id):
            return self._json(rec, 401, {"message": "'Issuer' claim ('iss') must be an Integer"})
        if payload["exp"] > now + 600 + 1 or payload["iat"] > now + 1:
            return self._json(rec, 401, {"message": "'Expiration time' claim ('exp') is too far in the future"})
        if args[0] != str(s.installation_id):
            return self._not_found(rec)
        with s.lock:
            s.jwts.append(payload)
            issued = "ghs_" + secrets.token_hex(18)
            expires = now + s.token_lifetime
            s.installation_tokens[issued] = expires
        self._json(rec, 201, {"token": issued, "expires_at": iso(expires), "permissions": {"contents": "write"},
                              "repository_selection": "all"})

    # ---------------------------------------------------------------- storage
    def _storage_get(self, rec):
        s = self.stub
        if "authorization" in rec.headers:
            # S3 refuses a presigned URL that also carries an Authorization header; so do we, loudly.
            return self._send(rec, 400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                                        b"allowed; the GitHub token must not be sent to the storage host</Message>"
                                        b"</Error>", content_type="application/xml")
        parts = rec.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "releases" or "X-Amz-Signature" not in rec.query:
            return self._send(rec, 403, b"<Error><Code>AccessDenied</Code></Error>", content_type="application/xml")
        try:
            data = s.blobs[int(parts[2])]
        except (KeyError, ValueError):
            return self._send(rec, 404, b"<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
        start, status, headers = 0, 200, {"Accept-Ranges": "bytes", "ETag": '"%s"' % hashlib.md5(data).hexdigest()}
        wanted = rec.headers.get("range", "")
        if wanted.startswith("bytes=") and wanted[6:].split("-")[0].isdigit():
            start = int(wanted[6:].split("-")[0])
            if start >= len(data):
                headers["Content-Range"] = "bytes */%d" % len(data)
                return self._send(rec, 416, b"", headers, content_type="application/xml")
            status = 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
        body = data[start:]
        with s.lock:
            cut, s.cut_after = s.cut_after, None
        if cut is None:
            return self._send(rec, status, body, headers, content_type="application/octet-stream")
        # Promise the whole body, send part of it, hang up: a connection broken mid-download.
        rec.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True

    def _uploads_get(self, rec):
        self._not_found(rec)

    # ---------------------------------------------------------------- uploads
    def _upload(self, rec):
        s = self.stub
        ok, authed = self._auth(rec)
        if not ok:
            return
        if not authed:
            return self._json(rec, 401, {"message": "Requires authentication"})
        parts = rec.path.strip("/").split("/")
        if len(parts) != 6 or parts[0] != "repos" or parts[3] != "releases" or parts[5] != "assets":
            return self._not_found(rec)
        repo = s.repos.get((parts[1].lower(), parts[2].lower()))
        rel = next((r for r in repo.releases if str(r["id"]) == parts[4]), None) if repo else None
        if rel is None:
            return self._not_found(rec)
        name = rec.query.get("name")
        if not name:
            return self._json(rec, 422, {"message": "Validation Failed", "errors": [
                {"resource": "ReleaseAsset", "code": "missing_field", "field": "name"}]})
        if not rec.headers.get("content-type"):
            return self._json(rec, 422, {"message": "Validation Failed", "errors": [
                {"resource": "ReleaseAsset", "code": "missing_field", "field": "content_type"}]})
        if any(a["name"] == name for a in rel["assets"]):
            return self._json(rec, 422, {"message": "Validation Failed", "errors": [
                {"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}]})
        asset = s.add_asset(repo.owner, repo.name, rel["tag_name"], name, rec.body,
                            content_type=rec.headers["content-type"])
        self._json(rec, 201, asset)


def forget_github_clients() -> None:
    """Drop dewy.github's per-process clients and remembered assets (a test starting a fresh stand-in server)."""
    from dewy import github

    with github._clients_lock:
        github._clients.clear()
    github._assets.clear()
