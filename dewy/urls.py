"""Backend URLs: parse `scheme://netloc/path?key=value` and check them against a scheme table.

Every backend package (registry, artifact, cache, notify) describes what it supports in a table
`scheme -> allowed query keys`; `check()` turns a typo into a one-line error that lists what is
supported. Messages never contain the URL itself, so credentials in it cannot leak.
"""

import ipaddress
import re
import urllib.parse
from typing import Iterable, Mapping, NamedTuple

# A bare word such as "file" or "memory" is a URL with only a scheme (the cache default is "file").
_BARE_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class ParsedURL(NamedTuple):
    """The parts of a backend URL; `query` keeps the last value of a repeated key."""

    scheme: str
    netloc: str
    path: str
    query: dict

    @property
    def hostname(self) -> str:
        """The host part of netloc without credentials or port ("" when there is none)."""
        return urllib.parse.urlsplit("//" + self.netloc).hostname or ""

    @property
    def port(self) -> int | None:
        """The port of netloc, or None."""
        return urllib.parse.urlsplit("//" + self.netloc).port


def parse(url: str) -> ParsedURL:
    """Split url into scheme (lower case), netloc, percent-decoded path and query dict."""
    url = (url or "").strip()
    if _BARE_SCHEME.match(url):
        return ParsedURL(url.lower(), "", "", {})
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return ParsedURL(parts.scheme.lower(), parts.netloc, urllib.parse.unquote(parts.path), query)


def _supported(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names) if names else "none"


def check(url: str, table: Mapping[str, Iterable[str]], kind: str) -> ParsedURL:
    """Parse url and raise ValueError unless its scheme is in table and its query keys are allowed.

    `table` maps scheme -> allowed query keys (None: any); `kind` ("registry", "cache"...) names the URL in
    the message when it has no scheme at all.
    """
    parsed = parse(url)
    if not parsed.scheme:
        word = (url or "").strip().partition("?")[0]
        if _BARE_SCHEME.match(word) and word.lower() in table:
            # `file?key=v` is no URL at all (no "://"): say that rather than "no scheme; supported: file".
            raise ValueError('bare "%s" takes no query; write the whole URL (%s:// and the rest before the ?)' % (
                word, word.lower()))
        raise ValueError('%s URL has no scheme; supported: %s' % (kind, _supported(table)))
    if parsed.scheme not in table:
        raise ValueError('unsupported scheme "%s"; supported: %s' % (parsed.scheme, _supported(table)))
    if table[parsed.scheme] is None:
        return parsed  # the scheme takes any query (a presigned https:// URL carries its signature there)
    allowed = set(table[parsed.scheme])
    for key in parsed.query:
        if key not in allowed:
            raise ValueError('unknown query key "%s" for %s://; supported: %s'
                             % (key, parsed.scheme, _supported(allowed)))
    return parsed


def query_bool(parsed: ParsedURL, key: str, default: bool = False) -> bool:
    """The boolean value of a query key (true/false/1/0/yes/no); ValueError for anything else."""
    value = parsed.query.get(key)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError('bad value "%s" for query key "%s" of %s://; allowed: true, false, 1, 0, yes, no'
                     % (value, key, parsed.scheme))


def is_loopback(host: str) -> bool:
    """Whether host names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_web_url(parsed: ParsedURL, kind: str) -> None:
    """Raise ValueError for an http(s) URL without a host, or plaintext http:// to anything but loopback
    (over a network, anyone on the path could read or change what goes over it). kind: "artifact", "webhook"."""
    if not parsed.hostname:
        raise ValueError("%s:// %s URL needs a host" % (parsed.scheme, kind))
    if parsed.scheme == "http" and not is_loopback(parsed.hostname):
        raise ValueError("http:// %s URLs are allowed for loopback hosts only; use https://" % kind)


def plain_text(text, limit: int = 2000) -> str:
    """Text from outside (a registry's error, a store's reason) for logs, terminals and notifications: tabs
    and line breaks become spaces, other control characters (terminal escapes, C1) are dropped, and it is cut
    to limit characters."""
    text = str(text)
    if any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in text):
        text = "".join(" " if c in "\t\n\r\x0b\x0c" else c for c in text
                       if not (ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0) or c in "\t\n\r\x0b\x0c")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_redirect(source: str, target: str, kind: str) -> None:
    """Raise ValueError unless a redirect from source to target keeps the web URL rule (check_web_url): an
    http(s) target with a host, and plaintext http:// only to loopback, so an https:// download is never
    handed over to plain http off loopback (a downgrade anyone on the path could read or change)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("%s redirect to a URL that is not http(s) with a host: refused" % kind)
    if scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("%s redirect from %s:// to plain http://%s refused (http:// only to loopback hosts)"
                         % (kind, urllib.parse.urlsplit(source).scheme or "?", parts.hostname))


def table_keys(schemes: Mapping[str, tuple]) -> dict:
    """Reduce a package SCHEMES table (scheme -> (module, class, keys)) to scheme -> keys."""
    return {scheme: row[-1] for scheme, row in schemes.items()}


def load_class(schemes: Mapping[str, tuple], scheme: str):
    """Import the module implementing scheme (only now: SDKs stay unloaded until used), return its class."""
    import importlib

    module_name, class_name = schemes[scheme][0], schemes[scheme][1]
    return getattr(importlib.import_module(module_name), class_name)


def validate(url: str, schemes: Mapping[str, tuple], kind: str) -> ParsedURL:
    """Check url against a package SCHEMES table, then let the implementing class check the values.

    The class may define `validate(parsed)` (a classmethod raising ValueError) so that a bad query
    value such as `pre-release=maybe` is a config error, not a runtime surprise in the poller.
    """
    parsed = check(url, table_keys(schemes), kind)
    from dewy import extras  # a backend whose pip extra is missing is a config error, not a failing poll

    extras.require_backend(schemes[parsed.scheme][0], parsed.scheme)
    cls = load_class(schemes, parsed.scheme)
    validator = getattr(cls, "validate", None)
    if validator is not None:
        validator(parsed)
    return parsed
