"""A small GitHub REST API client shared by the ghr:// registry and the ghr:// artifact store.

One `requests.Session` per API endpoint and identity (so the registry and the artifact of one poller
share connections, rate-limit state and the unauthenticated warning), with:

- auth from the environment: `GH_TOKEN`, else `GITHUB_TOKEN`; or a GitHub App (`GITHUB_APP_ID`,
  `GITHUB_APP_INSTALLATION_ID`, `GITHUB_APP_PRIVATE_KEY` or `GITHUB_APP_PRIVATE_KEY_PATH`) whose RS256
  JWT is exchanged for an installation token, renewed before it expires; none: 60 requests/hour;
- the endpoint from `GITHUB_API_URL` (also `GITHUB_ENDPOINT`, for GitHub Enterprise), else api.github.com;
- GitHub's headers (`Accept`, `X-GitHub-Api-Version`, `User-Agent: dewy/<version>`) and a timeout on
  every call; the token is sent to the API (and the uploads host), never to a redirect target;
- conditional GETs: each URL's `ETag` and parsed answer are kept, `If-None-Match` is sent, and a 304
  returns the kept answer without parsing anything;
- rate limits: `X-RateLimit-Remaining: 0`, or a 403/429 that says so (or carries `Retry-After`), stops
  every call until the reset; `RateLimited` says until when (nobody sleeps here);
- one-line errors with every token redacted.

Only the standard library is imported at module level: requests and jwt are imported when used.
"""

import json
import logging
import os
import re
import threading
import time
import urllib.parse
from datetime import datetime
from email.utils import parsedate_to_datetime

import dewy
from dewy import log as dewy_log
from dewy import urls
from dewy.clock import utc_iso

log = logging.getLogger("dewy.github")

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
JSON_ACCEPT = "application/vnd.github+json"
TIMEOUT = (10.0, 60.0)           # (connect, read) seconds for every call
MAX_JSON = 16 << 20              # bytes of one JSON answer dewy reads (a release page with assets is ~1 MiB)
RENEW_BEFORE = 300.0             # renew an App installation token this long before it expires
JWT_BACKDATE = 60                # iat this far in the past: clocks drift (GitHub's advice)
JWT_LIFETIME = 540               # exp - now; GitHub accepts at most 10 minutes
SECONDARY_LIMIT_WAIT = 60.0      # a secondary rate limit without Retry-After: wait at least a minute
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^";]+)"?')

TOKEN_VARS = ("GH_TOKEN", "GITHUB_TOKEN")
APP_VARS = ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_PATH")


class GitHubError(Exception):
    """A GitHub API call failed (one line, no credentials). `status` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(urls.plain_text(message))  # GitHub's (or a stand-in's) text: no terminal escapes
        self.status = status


class RateLimited(GitHubError):
    """GitHub asked us to wait; no call is made before `until` (epoch seconds)."""

    def __init__(self, message: str, until: float):
        super().__init__(message, status=None)
        self.until = until


def when(epoch: float) -> str:
    """An epoch time as dewy shows times in messages (ISO 8601 UTC, dewy.clock.utc_iso)."""
    return utc_iso(epoch)


def api_url_from_env(env=None) -> str:
    """The API base URL: $GITHUB_API_URL, else $GITHUB_ENDPOINT, else https://api.github.com (no trailing /)."""
    env = os.environ if env is None else env
    url = (env.get("GITHUB_API_URL") or env.get("GITHUB_ENDPOINT") or DEFAULT_API_URL).strip()
    return url.rstrip("/")


def check_api_url(url: str) -> None:
    """Raise ValueError unless url is an https:// URL (http:// only for a loopback host: tokens travel on it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError('GITHUB_API_URL must be an https:// URL such as https://ghe.example.com/api/v3, not "%s"'
                         % dewy_log.redact(url))
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("GITHUB_API_URL must use https:// (a token would travel in clear text to %s)"
                         % parts.hostname)
    if parts.query or parts.fragment:
        raise ValueError("GITHUB_API_URL must not have a query or fragment")


def check_auth_env(env=None) -> None:
    """Raise ValueError when the GitHub App variables are incomplete or unreadable (a config error)."""
    env = os.environ if env is None else env
    if env.get("GH_TOKEN") or env.get("GITHUB_TOKEN") or not any(env.get(v) for v in APP_VARS):
        return
    for var in ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID"):
        if not (env.get(var) or "").strip():
            raise ValueError("%s is not set; a GitHub App needs GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID and "
                             "GITHUB_APP_PRIVATE_KEY or GITHUB_APP_PRIVATE_KEY_PATH" % var)
    if not env.get("GITHUB_APP_INSTALLATION_ID", "").strip().isdigit():
        raise ValueError('GITHUB_APP_INSTALLATION_ID must be a number, not "%s"' % env["GITHUB_APP_INSTALLATION_ID"])
    if not env.get("GITHUB_APP_PRIVATE_KEY"):
        path = env.get("GITHUB_APP_PRIVATE_KEY_PATH")
        if not path:
            raise ValueError("a GitHub App needs GITHUB_APP_PRIVATE_KEY or GITHUB_APP_PRIVATE_KEY_PATH")
        if not os.access(path, os.R_OK):
            raise ValueError("GITHUB_APP_PRIVATE_KEY_PATH %s is not a readable file" % path)
    from dewy import extras

    extras.require("github", "GitHub App authentication (GITHUB_APP_ID)")


# --------------------------------------------------------------------------------------------- auth
class Auth:
    """Where the `Authorization` header comes from: a token, a GitHub App, or nothing."""

    kind = "none"

    def header(self, client) -> str | None:
        """The `Authorization` value to send to the API now (None: anonymous)."""
        return None

    def secrets(self) -> list:
        """Every secret string this auth knows (to redact from messages)."""
        return []

    def invalidate(self) -> None:
        """The API refused the credentials (401): get fresh ones on the next call, if we can."""


class TokenAuth(Auth):
    """A personal access token or GITHUB_TOKEN."""

    kind = "token"

    def __init__(self, token: str):
        self.token = token

    def header(self, client) -> str:
        """`Bearer <token>`."""
        return "Bearer " + self.token

    def secrets(self) -> list:
        """The token."""
        return [self.token]


class AppAuth(Auth):
    """A GitHub App installation: a JWT signed with the App's key buys a 1-hour installation token."""

    kind = "app"

    def __init__(self, app_id: str, installation_id: str, private_key: str = "", key_path: str = ""):
        self.app_id = app_id.strip()
        self.installation_id = installation_id.strip()
        self._key = private_key
        self.key_path = key_path
        self.token = None
        self.expires = 0.0        # epoch seconds the installation token expires
        self.exchanges = 0        # how many tokens were bought (for logs and tests)
        self._lock = threading.Lock()

    def private_key(self) -> str:
        """The App's PEM private key (GITHUB_APP_PRIVATE_KEY, or the file GITHUB_APP_PRIVATE_KEY_PATH)."""
        if self._key:
            # A key pasted into an env file often has literal \n: accept both forms.
            return self._key.replace("\\n", "\n")
        try:
            with open(self.key_path, encoding="utf-8") as fh:
                return fh.read()
        except OSError as exc:
            raise GitHubError("cannot read GITHUB_APP_PRIVATE_KEY_PATH %s: %s"
                              % (self.key_path, exc.strerror)) from None

    def jwt(self) -> str:
        """An RS256 JWT for the App: iat 60 s in the past, exp 9 minutes ahead (GitHub allows 10)."""
        import jwt

        now = int(time.time())
        payload = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": self.app_id}
        try:
            return jwt.encode(payload, self.private_key(), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            # The message of a bad key never contains the key itself, but keep it short and generic.
            raise GitHubError("cannot sign the GitHub App JWT with the private key: %s"
                              % type(exc).__name__) from None

    def header(self, client) -> str:
        """`Bearer <installation token>`, buying a new one when it expires within RENEW_BEFORE seconds."""
        with self._lock:
            if self.token is None or time.time() >= self.expires - RENEW_BEFORE:
                self._exchange(client)
            return "Bearer " + self.token

    def _exchange(self, client) -> None:
        token_jwt = self.jwt()
        path = "/app/installations/%s/access_tokens" % urllib.parse.quote(self.installation_id, safe="")
        response = client.call("POST", client.api_url + path, authorization="Bearer " + token_jwt,
                               extra_secrets=[token_jwt], stream=True)
        if response.status_code != 201:
            raise client.error_for(response, "GitHub App installation token for installation %s"
                                   % self.installation_id, extra_secrets=[token_jwt])
        try:
            data = json.loads(head_of(response))  # a token answer is small: never read more than 64 KiB
            token = data["token"]
            expires = parse_time(data.get("expires_at")) or time.time() + 3600
        except (ValueError, KeyError, TypeError, RecursionError):
            raise GitHubError("GitHub answered the installation token request with something that is not a token"
                              ) from None
        renewed = self.token is not None
        self.token, self.expires = token, expires
        self.exchanges += 1
        log.info("%s GitHub App installation token for installation %s (expires %s)",
                 "renewed the" if renewed else "got a", self.installation_id, when(expires))

    def secrets(self) -> list:
        """The installation token (the JWT is short-lived and redacted where it is used)."""
        return [self.token] if self.token else []

    def invalidate(self) -> None:
        """Forget the installation token: the next call buys a new one."""
        with self._lock:
            self.token, self.expires = None, 0.0


def auth_from_env(env=None) -> Auth:
    """The Auth the environment describes: GH_TOKEN, else GITHUB_TOKEN, else a GitHub App, else none."""
    env = os.environ if env is None else env
    for var in TOKEN_VARS:
        if (env.get(var) or "").strip():
            return TokenAuth(env[var].strip())
    if env.get("GITHUB_APP_ID") and env.get("GITHUB_APP_INSTALLATION_ID"):
        return AppAuth(env["GITHUB_APP_ID"], env["GITHUB_APP_INSTALLATION_ID"],
                       env.get("GITHUB_APP_PRIVATE_KEY", ""), env.get("GITHUB_APP_PRIVATE_KEY_PATH", ""))
    return Auth()


def parse_time(value) -> float | None:
    """GitHub's ISO 8601 time ("2026-11-26T06:50:12Z") as epoch seconds, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def next_link(link_header: str | None) -> str | None:
    """The `rel="next"` URL of a `Link` header, or None."""
    for url, rels in _LINK.findall(link_header or ""):
        if "next" in rels.split():
            return url
    return None


# --------------------------------------------------------------------------------------------- client
class Client:
    """GitHub REST calls for one API endpoint and identity. Thread-safe enough for one poller."""

    def __init__(self, api_url: str, auth: Auth):
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self._session = None
        self._etags = {}           # url -> (etag, parsed answer, Link header)
        self.limited_until = 0.0   # epoch seconds before which no call is made
        self.limited_reason = ""
        self._limited_logged = False
        if auth.kind == "none":
            log.warning("no GitHub credentials (GH_TOKEN, GITHUB_TOKEN or a GitHub App): the API allows "
                        "60 requests per hour without them, unchanged polls (304) included")

    @property
    def session(self):
        """The requests.Session (made on first use: importing requests is not free)."""
        if self._session is None:
            import requests

            session = requests.Session()
            # Only headers that may go anywhere: Authorization is added per API call, never here, so a
            # redirect to a storage host cannot carry it.
            session.headers.update({"User-Agent": "dewy/%s" % dewy.__version__})
            self._session = session
        return self._session

    # ---------------------------------------------------------------- redaction and errors
    def redact(self, text: str) -> str:
        """text without any token this client knows, and with URL credentials removed."""
        for secret in self.auth.secrets():
            if secret:
                text = text.replace(secret, dewy_log.REDACTED)
        return dewy_log.redact_text(text)

    def error_for(self, response, what: str, extra_secrets=()) -> GitHubError:
        """A one-line GitHubError for a failed response: status, GitHub's message, what we asked for."""
        message = ""
        head = head_of(response)
        try:
            body = json.loads(head)
            if isinstance(body, dict):
                message = str(body.get("message") or "")
        except (ValueError, RecursionError):
            message = head[:200].decode("utf-8", "replace")
        message = " ".join("".join(c if c.isprintable() else " " for c in message).split())  # a registry's text
        text = "GitHub API %s: %d %s%s" % (what, response.status_code, response.reason or "",
                                          (": " + message) if message else "")
        for secret in extra_secrets:
            text = text.replace(secret, dewy_log.REDACTED)
        return GitHubError(self.redact(" ".join(text.split())), status=response.status_code)

    # ---------------------------------------------------------------- rate limits
    def check_limit(self) -> None:
        """Raise RateLimited while GitHub asked us to wait; log once when the wait is over."""
        if self.limited_until and time.time() < self.limited_until:
            raise RateLimited("GitHub API rate limit (%s): no calls until %s"
                              % (self.limited_reason, when(self.limited_until)), self.limited_until)

    # Both lines are debug: the RateLimited error itself is what the poller logs, once per outage (and
    # its end), or a deploy logs as its failure. One line per incident, not one per layer.
    def _cleared(self) -> None:
        if self._limited_logged:
            log.debug("GitHub API rate limit cleared")
            self._limited_logged = False
        self.limited_until, self.limited_reason = 0.0, ""

    def _limit(self, until: float, reason: str) -> None:
        self.limited_until, self.limited_reason = until, reason
        if not self._limited_logged:
            log.debug("GitHub API rate limit (%s): no calls until %s", reason, when(until))
            self._limited_logged = True

    def _note_limits(self, response) -> None:
        """Read the rate-limit headers of a response; stop calling when GitHub says to."""
        headers = response.headers
        status = response.status_code
        remaining = headers.get("X-RateLimit-Remaining")
        reset = _number(headers.get("X-RateLimit-Reset"))
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        if status in (403, 429):
            message = ""
            try:
                body = json.loads(head_of(response))
                message = str(body.get("message") or "") if isinstance(body, dict) else ""
            except (ValueError, RecursionError):
                pass
            if retry_after is not None:
                self._limit(time.time() + retry_after, "HTTP %d, Retry-After %gs" % (status, retry_after))
                return
            if remaining == "0" and reset:
                self._limit(reset, "HTTP %d, none of the hourly requests left" % status)
                return
            if status == 429 or "rate limit" in message.lower():
                # A secondary rate limit without a hint: GitHub says wait at least a minute.
                self._limit(time.time() + SECONDARY_LIMIT_WAIT, "HTTP %d, secondary rate limit" % status)
                return
        if remaining == "0" and reset and reset > time.time():
            # This answer is good, but it was the last one: nothing more until the reset.
            self._limit(reset, "none of the %s hourly requests left" % (headers.get("X-RateLimit-Limit") or "allowed"))
            return
        if status < 400 and self.limited_until:
            self._cleared()

    # ---------------------------------------------------------------- calls
    def call(self, method: str, url: str, *, headers=None, authorization=True, extra_secrets=(), **kwargs):
        """One request to the API (or its uploads host) with GitHub's headers, auth and a timeout.

        `authorization`: True (this client's credentials), False (none), or an explicit header value.
        Raises RateLimited before calling while limited, GitHubError for connection errors and for a
        rate-limiting answer; other HTTP statuses are returned for the caller to judge.
        """
        import requests

        self.check_limit()
        sent = {"Accept": JSON_ACCEPT, "X-GitHub-Api-Version": API_VERSION}
        sent.update(headers or {})
        if authorization is True:
            value = self.auth.header(self)
        else:
            value = authorization or None
        if value:
            sent["Authorization"] = value
        kwargs.setdefault("timeout", TIMEOUT)
        try:
            response = self.session.request(method, url, headers=sent, **kwargs)
        except requests.RequestException as exc:
            text = "GitHub API %s %s: %s" % (method, _path_of(url), _short(exc))
            for secret in extra_secrets:
                text = text.replace(secret, dewy_log.REDACTED)
            raise GitHubError(self.redact(text)) from None
        self._note_limits(response)
        if response.status_code in (403, 429) and self.limited_until > time.time():
            response.close()
            raise RateLimited("GitHub API rate limit (%s): no calls until %s"
                              % (self.limited_reason, when(self.limited_until)), self.limited_until)
        if response.status_code == 401 and authorization is True:
            self.auth.invalidate()  # an App token revoked early: buy a new one next time
        return response

    def get_json(self, url: str, what: str, conditional: bool = True, timeout=None):
        """GET url and return (parsed JSON, Link header, fresh); a 304 returns the kept answer, fresh=False.

        The ETag and parsed answer of each URL are kept; `If-None-Match` is sent when we have one.
        `timeout`: (connect, read) seconds instead of TIMEOUT (the registry's shorter ones).
        """
        kept = self._etags.get(url) if conditional else None
        headers = {"If-None-Match": kept[0]} if kept else {}
        response = self.call("GET", url, headers=headers, timeout=timeout or TIMEOUT, stream=True)
        with response:
            if response.status_code == 304 and kept:
                return kept[1], kept[2], False  # unchanged: nothing to parse
            if response.status_code != 200:
                raise self.error_for(response, what)
            body = read_capped(response, MAX_JSON, "GitHub API %s" % what, self.redact)
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                raise GitHubError("GitHub API %s: the answer is not JSON" % what) from None
            link = response.headers.get("Link")
            etag = response.headers.get("ETag")
            if conditional and etag:
                self._etags[url] = (etag, data, link)
            return data, link, True

    def same_origin(self, url: str) -> bool:
        """True when url is on the API's scheme/host/port (a `Link` we may send our token to)."""
        a, b = urllib.parse.urlsplit(self.api_url), urllib.parse.urlsplit(url)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)

    def uploads_host(self, url: str) -> bool:
        """True when url may be the API's uploads host, the only other place our token goes: uploads.github.com
        beside api.github.com, else the API's own host (GitHub Enterprise's /api/uploads), with its scheme."""
        a, b = urllib.parse.urlsplit(self.api_url), urllib.parse.urlsplit(url)
        if a.scheme != b.scheme:
            return False
        if a.hostname == "api.github.com":
            return b.hostname in ("uploads.github.com", "api.github.com")
        return a.hostname == b.hostname

    def url(self, path: str, **params) -> str:
        """The API URL of path (quoted by the caller) with query params."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        return self.api_url + path + query


def _number(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def retry_after_seconds(value) -> float | None:
    """Retry-After as seconds from now (it is a number of seconds or an HTTP date), or None."""
    if value in (None, ""):
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _path_of(url: str) -> str:
    """The path of url (what an error line names; the host is in the config already)."""
    parts = urllib.parse.urlsplit(url)
    return "%s://%s%s" % (parts.scheme, parts.netloc, parts.path)


def _short(exc: Exception) -> str:
    """A connection error in a few words (requests' messages nest urllib3's objects and repeat the URL)."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset",
                   "Temporary failure in name resolution", "certificate verify failed", "Connection aborted",
                   "Connection broken"):  # the last: a body cut short of its Content-Length (IncompleteRead)
        if marker in text:
            return "%s (%s)" % (type(exc).__name__, marker.lower())
    return "%s: %s" % (type(exc).__name__, " ".join(text.split())[:200])


# --------------------------------------------------------------------------------------------- sharing
_clients = {}
_clients_lock = threading.Lock()
_assets = {}  # (api_url, owner, repo, tag, name) -> asset JSON the registry saw (the artifact needs its id)


def client_from_env(env=None) -> Client:
    """The shared Client for the environment's endpoint and credentials (one per process and identity)."""
    env = os.environ if env is None else env
    api_url = api_url_from_env(env)
    check_api_url(api_url)
    auth = auth_from_env(env)
    if isinstance(auth, TokenAuth):
        key = (api_url, "token", auth.token)
    elif isinstance(auth, AppAuth):
        key = (api_url, "app", auth.app_id, auth.installation_id, env.get("GITHUB_APP_PRIVATE_KEY", ""),
               auth.key_path)
    else:
        key = (api_url, "none")
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = Client(api_url, auth)
        return client


def remember_asset(api_url: str, owner: str, repo: str, tag: str, asset: dict) -> None:
    """Keep an asset's JSON the registry listed, so the artifact store need not look it up again."""
    _assets[(api_url, owner.lower(), repo.lower(), tag, asset.get("name"))] = asset


def known_asset(api_url: str, owner: str, repo: str, tag: str, name: str) -> dict | None:
    """The asset JSON remember_asset() kept, or None."""
    return _assets.get((api_url, owner.lower(), repo.lower(), tag, name))


# --------------------------------------------------------------------------------------------- assets
MAX_REDIRECTS = 5


def open_asset(client: Client, owner: str, repo: str, asset_id, offset: int = 0, timeout=None):
    """Start downloading a release asset from byte offset; returns a streaming response, or None when the
    storage ignored the Range (cannot resume). `timeout`: (connect, read) seconds instead of TIMEOUT.

    `GET /repos/{o}/{r}/releases/assets/{id}` with `Accept: application/octet-stream` answers 302 to a
    signed URL on a storage host. The redirect is followed here, by hand, with no Authorization header:
    the signed URL is its own credential and the GitHub token must never reach another host.
    """
    import requests

    url = client.url("/repos/%s/%s/releases/assets/%s" % (_q(owner), _q(repo), _q(str(asset_id))))
    ranged = {"Range": "bytes=%d-" % offset} if offset else {}
    timeout = timeout or TIMEOUT
    response = client.call("GET", url, headers=dict({"Accept": "application/octet-stream"}, **ranged),
                           stream=True, allow_redirects=False, timeout=timeout)
    hops = 0
    while response.is_redirect:
        location = urllib.parse.urljoin(response.url, response.headers.get("Location", ""))
        response.close()
        try:
            urls.check_redirect(response.url, location, "GitHub asset")
        except ValueError as exc:
            raise GitHubError("GitHub asset %s of %s/%s: %s" % (asset_id, owner, repo, exc)) from None
        hops += 1
        if hops > MAX_REDIRECTS:
            raise GitHubError("GitHub asset %s of %s/%s: more than %d redirects" % (asset_id, owner, repo, MAX_REDIRECTS))
        try:
            response = client.session.get(location, headers=dict({"Accept": "application/octet-stream"}, **ranged),
                                          stream=True, allow_redirects=False, timeout=timeout)
        except requests.RequestException as exc:
            raise GitHubError(client.redact("GitHub asset %s storage %s: %s"
                                            % (asset_id, _path_of(location), _short(exc)))) from None
    what = "download of asset %s of %s/%s" % (asset_id, owner, repo)
    if response.status_code == 206 and offset:
        start = _range_start(response.headers.get("Content-Range"))
        if start != offset:
            response.close()
            raise GitHubError("GitHub %s: asked for bytes from %d, got %s" % (what, offset, start))
        return response
    if response.status_code == 200:
        if offset:
            response.close()
            return None  # the store sent everything again: it cannot resume
        return response
    error = client.error_for(response, what)
    response.close()
    raise error


def read_asset(client: Client, owner: str, repo: str, asset_id, limit: int, timeout=None) -> bytes:
    """A small asset's bytes (a checksum file), at most limit bytes; GitHubError when it is bigger."""
    response = open_asset(client, owner, repo, asset_id, timeout=timeout)
    import requests

    with response:
        data = b""
        try:
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise GitHubError("GitHub asset %s is larger than %d bytes" % (asset_id, limit))
        except requests.RequestException as exc:
            raise GitHubError(client.redact("GitHub asset %s: %s" % (asset_id, _short(exc)))) from None
    return data


def head_of(response, limit: int = 64 * 1024) -> bytes:
    """The first limit bytes of a response's body (an error's message), read once and kept on the response:
    an error answer is never read whole (a hostile server may send one without end)."""
    head = getattr(response, "_dewy_head", None)
    if head is None:
        import requests

        data = bytearray()
        try:
            for chunk in response.iter_content(8192):
                data += chunk
                if len(data) >= limit:
                    break
        except (requests.RequestException, RuntimeError):  # RuntimeError: the body was consumed already
            pass
        head = response._dewy_head = bytes(data[:limit])
    return head


def read_capped(response, limit: int, what: str, redact=lambda text: text) -> bytes:
    """A streamed response's body, at most limit bytes; GitHubError naming the cap when it is longer (an
    endless answer must not grow the poller's memory), or when the connection breaks."""
    import requests

    data = bytearray()
    try:
        for chunk in response.iter_content(64 * 1024):
            data += chunk
            if len(data) > limit:
                raise GitHubError("%s: the answer is larger than %d bytes (the cap on a registry answer)"
                                  % (what, limit))
    except requests.RequestException as exc:
        raise GitHubError(redact("%s: %s" % (what, _short(exc)))) from None
    return bytes(data)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of `Content-Range: bytes 100-199/200`, or None."""
    match = re.match(r"\s*bytes\s+(\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _q(part: str) -> str:
    """A URL path segment, quoted."""
    return urllib.parse.quote(part, safe="")
