"""dewy's settings, each declared once in SETTINGS.

From that one list come: the `[dewy]` section of an ini file (`load_ini`), the `dewy server|assets`
flags (`from_options`, `usage_options`), the defaults, the validation, the frozen `Config` class and the
README reference table (`markdown_table`, `python -m dewy.config --markdown`).

Every error is a `ConfigError` whose text is one line naming the source, the key, the bad value
(credentials redacted) and what is allowed, e.g.
`dewy.ini: [dewy] interval = "ten": expected a duration such as 500ms, 10s, 1m or plain seconds`.
"""

# configparser, difflib, ipaddress, shlex and textwrap are imported where they are used: the poller
# only rebuilds a Config from JSON and should not carry the ini parser (see bench: poller RSS).
import importlib
import json
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable

from dewy import log
from dewy.configtype import Config, Ready  # the one config class, lean: the master and the poller use it too
from dewy.log import redact, redact_text
from dewy.values import (  # noqa: F401 - the shared value forms (dewy.config.format_size: tests read it there)
    BadValue, format_size, parse_address, parse_duration, parse_size)

SECTION = "dewy"
CLI_SOURCE = "command line"
MAX_PORTS = 1024
STOP_SIGNALS = ("TERM", "QUIT", "INT", "HUP", "USR1", "USR2", "WINCH", "KILL")
MODES = ("server", "assets", "container")
CHECKSUM_POLICIES = ("auto", "required", "off")

PORT_HELP = ("expected a listen address such as 8000, 127.0.0.1:8000, [::1]:8000, 8000-8005 or "
             "unix:/path, separated by commas or spaces")


class ConfigError(Exception):
    """A bad configuration; str() is one line naming the source, the key, the bad value and what is allowed."""

    def __init__(self, message: str):
        # One line whatever the value held: control, line- and paragraph-separator and bidi characters
        # (NEL \x85, \u2028, \u202e...) are shown escaped, as json.dumps shows \n.
        message = str(message)
        if not message.isprintable():
            message = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
        super().__init__(message)


# --- value types -------------------------------------------------------------------------------

READY_DEFAULT_SECONDS = {"delay": 1.0, "notify": 60.0, "http": 60.0}

def _not_a_url(text: str) -> None:
    """BadValue for `http://host/path` where `http:/path` is meant: the check always asks the app's own socket
    (a host would make the request line `GET //host/path`, which no good release answers)."""
    scheme, sep, rest = text.strip().partition(":")
    if sep and scheme.lower() in ("http", "https") and rest.startswith("//"):
        path = rest[2:].partition("/")[2]
        example = "http:/" + path if path and not any(c.isspace() for c in path) else "http:/PATH such as http:/healthz"
        raise BadValue("expected a path on the app's own socket, not a URL with a host: write %s "
                       "(dewy asks the app's first TCP listener)" % example)


def parse_http_path(text: str) -> str:
    """`http:/path` -> `/path` (the `health` setting and `ready = http:`); BadValue otherwise."""
    _not_a_url(text)
    scheme, sep, path = text.strip().partition(":")
    if scheme.lower() != "http" or not sep or not path.startswith("/") or any(c.isspace() for c in path):
        raise BadValue("expected http:/PATH, e.g. http:/healthz")
    return path


def parse_ready(text: str) -> Ready:
    """`delay`, `delay:1s`, `notify`, `notify:30s`, `http:/path` or `http:/path:30s` -> Ready(kind, seconds, path)."""
    _not_a_url(text)
    kind, sep, duration = text.strip().partition(":")
    kind = kind.lower()
    if kind == "http":
        path, seconds = text.strip(), READY_DEFAULT_SECONDS["http"]
        head, colon, tail = path.rpartition(":")
        if colon and head.lower() != "http":  # http:/healthz:30s — a timeout after the path
            path, seconds = head, parse_duration(tail)
            _ready_floor("http", seconds)
        return Ready("http", seconds, parse_http_path(path))
    duration = duration.lower()
    if kind not in READY_DEFAULT_SECONDS:
        raise BadValue("expected delay, delay:DURATION, notify, notify:TIMEOUT or http:/PATH[:TIMEOUT] "
                       "(e.g. delay:1s, notify:30s, http:/healthz:30s)")
    if not sep:
        return Ready(kind, READY_DEFAULT_SECONDS[kind])
    seconds = parse_duration(duration)
    if kind == "notify":
        _ready_floor(kind, seconds)
    return Ready(kind, seconds)


def _ready_floor(kind: str, seconds: float) -> None:
    """BadValue for a readiness timeout under MIN_WORK_DURATION: it would refuse every good release."""
    if seconds < MIN_WORK_DURATION:
        raise BadValue("the %s readiness timeout must be at least %s (a shorter one refuses every good release)"
                       % (kind, _span(MIN_WORK_DURATION)))


def parse_signal(text: str) -> int:
    """A stop signal given as `TERM`, `SIGTERM`, `term` or `15` -> its number."""
    name = text.strip().upper()
    if name.isdigit():
        try:
            name = signal.Signals(int(name)).name
        except ValueError:
            name = ""
    name = name.removeprefix("SIG")
    if name not in STOP_SIGNALS:
        raise BadValue("expected a signal name or number: %s" % ", ".join(STOP_SIGNALS))
    return int(getattr(signal, "SIG" + name))


# Size units: decimal (kB = 1000) and binary (KiB = 1024), matched without regard to case ("500mb" too).
def _port_number(text: str) -> int:
    """A TCP port number 1..65535."""
    number = int(text)
    if not 1 <= number <= 65535:
        raise BadValue("port %d is out of range 1..65535" % number)
    return number


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
_PORT_RANGE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


def _split_host(entry: str) -> tuple[str, str, str]:
    """Split a TCP listen entry into (host, prefix to keep before the port, port part)."""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise BadValue('"%s": an IPv6 address needs brackets and a port, e.g. [::1]:8000' % entry)
        try:
            import ipaddress

            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadValue('"%s": "%s" is not an IPv6 address' % (entry, host)) from None
        return host, "[" + host + "]:", rest[1:]
    host, colon, port = entry.rpartition(":")
    if not colon:
        return "", "", entry
    if ":" in host:
        raise BadValue('"%s": write an IPv6 address in brackets, e.g. [::1]:8000' % entry)
    if not _valid_host(host):
        raise BadValue('"%s": "%s" is not an IP address or host name' % (entry, host))
    return host, host + ":", port


def _valid_host(host: str) -> bool:
    """Whether host is an IPv4 address or a DNS name (digits-and-dots must be a real IPv4 address)."""
    if re.fullmatch(r"[\d.]+", host):
        try:
            import ipaddress

            ipaddress.IPv4Address(host)
            return True
        except ValueError:
            return False
    return bool(_HOSTNAME.fullmatch(host))


def _expand_entry(entry: str) -> list[tuple[str, tuple]]:
    """One listen entry -> [(spec as configured, identity for duplicate checks)], ranges expanded."""
    if "://" in entry:  # tcp://127.0.0.1:8000, unix:///run/app.sock, http://...
        raise BadValue('"%s": port takes HOST:PORT, PORT or unix:/path, not a URL' % entry)
    if entry.startswith("unix:"):
        path = entry[len("unix:"):]
        if not path:
            raise BadValue('"%s": expected unix:/path/to.sock' % entry)
        if not path.startswith("/"):
            # Relative to what? The master's cwd differs between a shell and systemd: say it exactly.
            raise BadValue('"%s": a unix socket path must be absolute, e.g. unix:/run/app.sock' % entry)
        if len(os.fsencode(path)) > 107:
            raise BadValue('"%s": a unix socket path may be at most 107 bytes' % entry)
        return [(entry, ("unix", path))]
    host, prefix, port = _split_host(entry)
    match = _PORT_RANGE.fullmatch(port)
    if not match:
        raise BadValue('"%s": %s' % (entry, PORT_HELP))
    low = _port_number(match[1])
    if match[2] is None:
        return [(entry, (host.lower(), low))]
    high = _port_number(match[2])
    if low > high:
        raise BadValue('"%s": a port range must go from low to high' % entry)
    if high - low >= MAX_PORTS:
        raise BadValue('"%s": at most %d listen addresses' % (entry, MAX_PORTS))
    return [(prefix + str(p), (host.lower(), p)) for p in range(low, high + 1)]


def _scope(identity: tuple) -> tuple | None:
    """(family, address or "*" for every address) of a TCP listen identity (host, port); None for a unix
    socket or a host name (what a name resolves to is known only when binding)."""
    host = identity[0]
    if host == "unix":
        return None
    if host in ("", "0.0.0.0"):
        return 4, "*"  # a bare port listens on every IPv4 address (dewy.master.sockets)
    import ipaddress

    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 6:
        return 6, "*" if address.is_unspecified else str(address)
    return 4, str(address)


def _scopes(identity: tuple, dual_stack: bool = False) -> list:
    """The scopes (see _scope) an identity takes; a dual-stack `[::]` (the poller's metrics and trigger servers:
    no IPV6_V6ONLY) takes every IPv4 address too. dewy's own `port` sockets set IPV6_V6ONLY (dewy.master.sockets)."""
    scope = _scope(identity)
    if scope is None:
        return []
    return [scope, (4, "*")] if dual_stack and scope == (6, "*") else [scope]


def overlap(a: tuple, b: tuple, a_dual: bool = False, b_dual: bool = False) -> bool:
    """Whether two listen identities (host, port) would take the same address: the same port and family,
    with equal addresses or one of them every address (0.0.0.0, a bare port, [::]); a_dual/b_dual: that
    side listens dual-stack, so its [::] also takes every IPv4 address."""
    if a[1] != b[1]:
        return False
    if a == b:
        return True
    return any(sa[0] == sb[0] and ("*" in (sa[1], sb[1]) or sa[1] == sb[1])
               for sa in _scopes(a, a_dual) for sb in _scopes(b, b_dual))


def _wildcard_note(*specs: str) -> str:
    """Why two specs overlap, when one of them listens on every address."""
    for spec in specs:
        if re.fullmatch(r"\d+", spec):
            return " (a bare port listens on every IPv4 address)"
        if spec.startswith(("0.0.0.0:", "[::]:")):
            return " (%s listens on every address)" % spec.rpartition(":")[0]
    return ""


def listen_identity(spec: str) -> tuple:
    """The identity of one single listen spec (as parse_ports returns them): ("unix", path) or (host, port)."""
    return _expand_entry(spec)[0][1]


def parse_ports(items: list[str] | str) -> tuple[str, ...]:
    """Listen specs (comma/space separated lists, ranges, `unix:` paths) -> a tuple of single specs, in order."""
    if isinstance(items, str):
        items = [items]
    specs: list[str] = []
    seen: dict[tuple, str] = {}
    by_port: dict = {}  # port -> the identities on it, for the overlap check
    for item in items:
        for entry in re.split(r"[\s,]+", item.strip()):
            if not entry:
                continue
            try:
                expanded = _expand_entry(entry)
            except BadValue as exc:
                raise BadValue(str(exc), shown=item) from None
            for spec, identity in expanded:
                if identity in seen:
                    raise BadValue('"%s" is listed twice (as "%s")' % (spec, seen[identity]), shown=item)
                for other in by_port.get(identity[1], ()):
                    if overlap(identity, other):
                        raise BadValue('"%s" overlaps "%s"%s: both would take the same address; list it once'
                                       % (spec, seen[other], _wildcard_note(spec, seen[other])), shown=item)
                seen[identity] = spec
                by_port.setdefault(identity[1], []).append(identity)
                specs.append(spec)
            if len(specs) > MAX_PORTS:
                raise BadValue("at most %d listen addresses" % MAX_PORTS, shown=item)
    return tuple(specs)


# --- validators: (raw value, base directory for relative paths) -> normalised value ---------------

def _choice(*allowed: str, aliases: dict | None = None) -> Callable[[str, str], str]:
    """A validator accepting one of `allowed` (any case), mapping `aliases` to their real name."""
    def validate(raw: str, base: str) -> str:
        value = raw.strip().lower()
        value = (aliases or {}).get(value, value)
        if value not in allowed:
            raise BadValue("expected one of: %s" % ", ".join(allowed))
        return value
    return validate


def _duration(minimum: float = 0.0, inclusive: bool = True) -> Callable[[str, str], float]:
    """A duration validator with a lower bound (`inclusive=False`: strictly greater than `minimum`)."""
    def validate(raw: str, base: str) -> float:
        seconds = parse_duration(raw)
        if seconds < minimum or (not inclusive and seconds == minimum):
            bound = "%g or more" % minimum if inclusive else "greater than %g" % minimum
            raise BadValue("expected a duration %s, such as 500ms, 10s or 1m" % bound)
        return seconds
    return validate


MIN_INTERVAL = 0.1  # polling more often only burns CPU (1ms kept a core ~17% busy) and hammers the registry
# The floor of every duration that drives work (polls, checks, hooks, readiness waits, idle cut-offs): below it
# dewy does nothing useful, only burns CPU or fails what is healthy (`health-interval = 1ms` bounds each check
# by 1ms: a healthy app was restarted 156 times in 8 s). Durations that only bound a wait may be 0
# (graceful-timeout: kill at once; drain-time: no drain; rollout-soak: no soak); `ready = delay:0` is ready at
# once; proxy-idle-timeout = 0 is never.
MIN_WORK_DURATION = MIN_INTERVAL


def _at_least(minimum: float, why: str) -> Callable[[str, str], float]:
    """A duration validator with a floor (minimum seconds), the error saying why the floor is there."""
    def validate(raw: str, base: str) -> float:
        seconds = parse_duration(raw)
        if seconds < minimum:
            raise BadValue("expected a duration of at least %s (%s), such as 500ms, 10s or 1m"
                           % (_span(minimum), why))
        return seconds
    return validate


def _span(seconds: float) -> str:
    """100ms, 1s: a floor as the operator writes it."""
    return "%gms" % (seconds * 1000) if seconds < 1 else "%gs" % seconds


_interval = _at_least(MIN_INTERVAL, "polling more often only burns CPU")


def _zero_or_at_least(minimum: float, why: str) -> Callable[[str, str], float]:
    """A duration validator: 0 (off) or at least minimum seconds."""
    floor = _at_least(minimum, why)

    def validate(raw: str, base: str) -> float:
        seconds = parse_duration(raw)
        if seconds == 0:
            return 0.0
        try:
            return floor(raw, base)
        except BadValue as exc:
            raise BadValue(str(exc).replace("expected a duration", "expected 0 (never) or a duration", 1)) from None
    return validate


def _integer(low: int, high: int | None = None) -> Callable[[str, str], int]:
    """A whole-number validator for low..high (no upper bound when high is None)."""
    allowed = "a whole number >= %d" % low if high is None else "a whole number %d..%d" % (low, high)

    def validate(raw: str, base: str) -> int:
        text = raw.strip()
        if not text.isdigit():
            raise BadValue("expected " + allowed)
        number = int(text)
        if number < low or (high is not None and number > high):
            raise BadValue("expected " + allowed)
        return number
    return validate


def _text(raw: str, base: str) -> str:
    """Any text, surrounding whitespace removed (shell commands, may be empty)."""
    return raw.strip()


def _slot(raw: str, base: str) -> str:
    """Build metadata to match (`blue`, `green.1`), or empty for no slot."""
    value = raw.strip()
    if value and not re.fullmatch(r"[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*", value):
        raise BadValue("expected semver build metadata: letters, digits, hyphens and dots (e.g. blue)")
    return value


def _waves(raw: str, base: str) -> tuple:
    """`rollout-waves`: increasing percentages of the fleet (`10%, 50%`), or empty (no rollout)."""
    text = raw.strip()
    if not text:
        return ()
    expected = "expected increasing percentages of the fleet, each above 0% and at most 100%, such as 10%, 50%"
    shares = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", part)
        if not match or not 0 < float(match[1]) <= 100 or (shares and float(match[1]) <= shares[-1]):
            raise BadValue(expected)
        shares.append(float(match[1]))
    return tuple(shares)


def _without_url_paths(text: str, urls_text: str) -> str:
    """text with the path and query of every URL in urls_text (a comma list) shown as `/...`: a notifier
    URL's path is often its credential (a Slack or Teams webhook), so no error prints it."""
    import urllib.parse

    for url in urls_text.split(","):
        parts = urllib.parse.urlsplit(url.strip())
        for secret in sorted({parts.path.rstrip("/"), parts.path, "?" + parts.query if parts.query else ""},
                             key=len, reverse=True):
            if len(secret) > 1:
                text = text.replace(secret, "/..." if secret.startswith("/") else "?...")
    return text


def _env_names(raw: str, base: str) -> tuple:
    """`app-env-keep`: environment variable names, comma-separated, or empty."""
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
            raise BadValue("expected environment variable names separated by commas, such as AWS_ACCESS_KEY_ID")
    return names


def _host_id(raw: str, base: str) -> str:
    """`host-id`: one key segment (it names this host's heartbeat in the shared cache), or empty (hostname)."""
    value = raw.strip()
    if value and (not re.fullmatch(r"[A-Za-z0-9_.@-]{1,200}", value) or value in (".", "..")):
        raise BadValue("expected ASCII letters, digits and _.@- (at most 200), such as web-3.eu")
    return value


def _path(required: bool) -> Callable[[str, str], str]:
    """A directory-path validator: absolute result, relative input resolved against the base directory."""
    def validate(raw: str, base: str) -> str:
        value = raw.strip()
        if not value:
            if required:
                raise BadValue("expected a directory path")
            return ""
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            # An ini value is taken as written: the quotes would become part of a directory's name. One quote
            # alone (/srv/bobs') is a legal name and taken as it is.
            raise BadValue("expected the path without quotes (spaces need none): %s" % value[1:-1].strip())
        return os.path.abspath(os.path.join(base, os.path.expanduser(value)))
    return validate


# Whitespace next to a query's ? & = (`reg   ?artifact=a.tgz`, `artifact=a.tgz  &x=1`) would end up in a path
# or a query value. (An ini file's `  # comment` never gets here: the ini reader strips it; see _read_section.)
_QUERY_SPACE = re.compile(r"^\s|\s[&=]|[&=]\s")  # searched in the query only: a path may hold "a & b"
# A `;` after whitespace in an ini URL value: a comment in the style of other ini files, which is not one here
# (only # starts an inline comment: shell commands in app and the hooks use ` ; `).
_SEMICOLON_COMMENT = re.compile(r"\s;")


def check_url_text(url: str) -> None:
    """BadValue for stray whitespace next to a URL's query delimiters (a space inside a file:// path is fine:
    directory names may hold one)."""
    path, question, query = url.partition("?")
    if question and (path != path.rstrip() or _QUERY_SPACE.search(query)):
        raise BadValue("whitespace next to the query's ? & or =: remove it (in a query value write a space as %20)")


def _literal_hash(url: str) -> str:
    """url with each # of a file:// URL written %23: a file URL has no fragment (dewy's file backends would drop
    it silently), so a # there belongs to the path or a query value (`--registry 'file:///srv/reg #2'`)."""
    if url[:5].lower() == "file:" and "#" in url:
        return url.replace("#", "%23")
    return url


def _backend_url(package: str, allow_empty: bool) -> Callable[[str, str], str]:
    """A URL validator delegating to `dewy.<package>.validate_url` (imported only now: keeps config light)."""
    def validate(raw: str, base: str) -> str:
        url = raw.strip()
        if not url and allow_empty:
            return ""
        if not url:
            raise BadValue("expected a %s URL" % package)
        check_url_text(url)
        url = _literal_hash(url)
        importlib.import_module("dewy." + package).validate_url(url)
        return url
    return validate


def _account(kind: str, empty_means: str) -> Callable[[str, str], str]:
    """A validator for a user (kind "user": /etc/passwd) or group ("group": /etc/group) name or numeric id that
    exists on this host, or empty (empty_means says what that does)."""
    def validate(raw: str, base: str) -> str:
        value = raw.strip()
        if value:
            import grp
            import pwd
            by_id, by_name = (pwd.getpwuid, pwd.getpwnam) if kind == "user" else (grp.getgrgid, grp.getgrnam)
            try:
                by_id(int(value)) if value.isdigit() else by_name(value)
            except (KeyError, OverflowError):
                raise BadValue("no such %s on this host; expected a %s name from /etc/%s or empty %s" % (
                    kind, kind, "passwd" if kind == "user" else "group", empty_means)) from None
        return value
    return validate


def _metrics_address(raw: str, base: str) -> str:
    """HOST:PORT for the metrics endpoint, or empty (off)."""
    value = raw.strip()
    if value:
        try:
            parse_address(value)
        except ValueError as exc:
            raise BadValue(str(exc)) from None
    return value


def _trigger_address(raw: str, base: str) -> str:
    """HOST:PORT for the deploy trigger listener, or empty (off)."""
    return _metrics_address(raw, base)


def _otlp_endpoint(raw: str, base: str) -> str:
    """HOST:PORT of an OTLP gRPC receiver, or "" (off)."""
    if not raw.strip():
        return ""
    parse_address(raw)  # ValueError (HOST:PORT expected) when it is not one
    from dewy import extras

    try:  # exit 2 at start, not a poller that silently exports nothing
        extras.require("otel", "otlp-endpoint")
    except ValueError as exc:
        raise BadValue(str(exc).replace("otlp-endpoint needs", "needs", 1)) from None
    return raw.strip()


def _app(raw: list[str] | str, base: str) -> tuple[str, ...]:
    """The app's argv: a list (command line) or one shell-quoted string (ini)."""
    if isinstance(raw, str):
        try:
            import shlex

            return tuple(shlex.split(raw))
        except ValueError as exc:
            raise BadValue("expected a shell-quoted command line (%s)" % str(exc).lower()) from None
    return tuple(str(arg) for arg in raw)


def _container_name(raw: str, base: str) -> str:
    """container mode's app name: letters, digits, _ . - (it is part of container names and a label)."""
    if raw and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", raw.strip()):
        raise BadValue("expected letters, digits, _ . - (at most 63, starting with a letter or digit)")
    return raw.strip()


def _url_path(raw: str, base: str) -> str:
    """A request path (/health) or empty."""
    raw = raw.strip()
    if raw and (not raw.startswith("/") or any(c.isspace() or ord(c) < 0x20 for c in raw)):
        raise BadValue("expected a path such as /health")
    return raw


def _ready(raw: str, base: str) -> Ready:
    return parse_ready(raw)


def _health(raw: str, base: str) -> str:
    """`health`: http:/PATH -> the path, or empty (off)."""
    return parse_http_path(raw) if raw.strip() else ""


def _ports(raw: list[str] | str, base: str) -> tuple[str, ...]:
    return parse_ports(raw)


def _signal(raw: str, base: str) -> int:
    return parse_signal(raw)


def _size(raw: str, base: str) -> int:
    return parse_size(raw)


# --- the settings ------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Setting:
    """One setting, declared once: its ini key and flag, value, default, validation and documentation.

    The command line spells it `--<name>` (plus `short`), unless `cli` says how it is given instead.
    """

    name: str                       # ini key and long flag; the Config attribute is name with "_" for "-"
    doc: str                        # one line for the reference table and the usage
    type: str                       # the kind of value, as the reference and usage show it
    default: str | None             # raw text, validated like a configured value; None = required
    validator: Callable[[Any, str], Any]
    pytype: Any = str               # the normalised Python type (annotation of the Config field)
    short: str | None = None        # "-p" or None
    meta: str = "VALUE"             # the argument's name in the usage
    multiple: bool = False          # a list: the flag may be repeated, the ini value may span indented lines
    cli: str | None = None          # how the command line gives a setting that has no flag of its own
    default_doc: str | None = None  # how the reference shows a default that is not literal text
    example: str = ""               # a typical value, for "is required" messages

    @property
    def attr(self) -> str:
        """The Config attribute name (snake_case)."""
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str | None:
        """The long flag (`--port`), or None for a setting the command line spells otherwise (`cli`)."""
        return None if self.cli else "--" + self.name


def _one_of(choices) -> str:
    """The `value` column for a choice setting: its choices joined by |."""
    return "|".join(choices)


SETTINGS: list[Setting] = [
    Setting(
        name="mode", cli="the command: dewy server | dewy assets | dewy container",
        type=_one_of(MODES), default="server", validator=_choice(*MODES),
        doc="Keep an application process running and current (server), a directory of static files (assets), or "
            "an OCI image's containers (container: registry img://, port PROXY:CONTAINER).",
    ),
    Setting(
        name="registry", meta="URL", example="file:///srv/releases",
        type="URL", default=None, validator=_backend_url("registry", allow_empty=False),
        doc="Where releases are published, e.g. file:///srv/releases; options ride on the query "
            "(?pre-release=true, ?artifact=NAME).",
    ),
    Setting(
        name="port", short="-p", meta="PORT", multiple=True,
        type="listen addresses", default="", default_doc="none", validator=_ports, pytype=tuple,
        doc="Addresses the master listens on and hands to the app as fds 3..: 8000, 127.0.0.1:8000, [::1]:8000, "
            "8000,8001, 8000-8005, unix:/path. Repeatable; in ini, the list may go on over indented lines.",
    ),
    Setting(
        name="interval", short="-i", meta="DURATION",
        type="duration", default="10s", validator=_interval, pytype=float,
        doc="How often the registry is polled (at least 100ms).",
    ),
    Setting(
        name="log-level", short="-l", meta="LEVEL",
        type=_one_of(log.LEVELS), default="info", validator=_choice(*log.LEVELS, aliases=log.LEVEL_ALIASES),
        doc="The least severe log records written.",
    ),
    Setting(
        name="log-format", short="-f", meta="FORMAT",
        type=_one_of(log.FORMATS), default="text", validator=_choice(*log.FORMATS),
        doc="Log lines on stderr as text or as JSON objects.",
    ),
    Setting(
        name="cache", short="-c", meta="URL",
        type="URL", default="file", validator=_backend_url("cache", allow_empty=False),
        doc="Where downloads and shared registry answers are kept: file ($DEWY_CACHEDIR, else workdir/.dewy/cache), "
            "file:///dir or memory; shared by a fleet: redis://[:password@]host:port/db, rediss://, "
            "unix:///path/redis.sock, consul://host:port/prefix, s3://region/bucket/prefix?endpoint= or "
            "gs://bucket/prefix (artifacts stay on local disk), "
            "with ?registry-ttl=30s for one registry call per TTL fleet-wide.",
    ),
    Setting(
        name="notifier", meta="URL",
        type="URL", default="", default_doc="none (log only)", validator=_backend_url("notify", allow_empty=True),
        doc="Where deploy notices go: a comma-separated list of slack://CHANNEL, mail://HOST:PORT/TO, "
            "smtp://..., https://WEBHOOK URLs (see Notifications); empty: the log only.",
    ),
    Setting(
        name="before-deploy-hook", meta="CMD",
        type="shell command", default="", default_doc="none", validator=_text,
        doc="Run with sh -c in workdir before a release is switched to; a failure aborts the deploy.",
    ),
    Setting(
        name="after-deploy-hook", meta="CMD",
        type="shell command", default="", default_doc="none", validator=_text,
        doc="Run with sh -c in workdir after a deploy.",
    ),
    Setting(
        name="after-rollback-hook", meta="CMD",
        type="shell command", default="", default_doc="none", validator=_text,
        doc="Run with sh -c in workdir after a rollback (a crash-looping release, or dewy rollback), with the "
            "deploy hooks' DEWY_* variables.",
    ),
    Setting(
        name="slot", short="-s", meta="SLOT",
        type="build metadata", default="", default_doc="none", validator=_slot,
        doc="Deploy only releases whose build metadata is SLOT (v1.2.3+blue), for blue/green.",
    ),
    Setting(
        name="app", cli="-- CMD [ARG...]",
        type="command line", default="", default_doc="none", validator=_app, pytype=tuple,
        doc="The application command: after -- on the command line, one shell-quoted line in ini. A relative path "
            "containing / resolves against workdir. Required in server mode, empty in assets mode.",
    ),
    Setting(
        name="workdir", meta="DIR",
        type="directory", default=".", default_doc="current directory", validator=_path(required=True),
        doc="Where releases/, current and .dewy/ live. Relative: to the ini file's directory, or on the command line "
            "to the current directory.",
    ),
    Setting(
        name="ready", meta="HOW",
        type="delay[:DURATION], notify[:TIMEOUT] or http:/PATH[:TIMEOUT]", default="delay:1s", validator=_ready,
        pytype=Ready,
        doc="When a new app generation counts as ready: alive after a delay, READY=1 on NOTIFY_SOCKET within a "
            "timeout (notify alone: 60s), or GET /PATH on the first TCP listener answering 2xx or 3xx within a timeout "
            "(http:/healthz:30s; alone: 60s). Timeouts are at least 100ms.",
    ),
    Setting(
        name="health", meta="HOW",
        type="http:/PATH", default="", default_doc="off", validator=_health,
        doc="Check the serving app every health-interval with GET /PATH on the first TCP listener; "
            "health-failures answers in a row other than 2xx or 3xx restart it gracefully (a crash while on probation).",
    ),
    Setting(
        name="health-interval", meta="DURATION",
        type="duration", default="10s", pytype=float,
        validator=_at_least(MIN_WORK_DURATION, "each check may take as long: a shorter one fails healthy apps"),
        doc="How often the health check runs (each check may take as long; at least 100ms).",
    ),
    Setting(
        name="health-failures", meta="N",
        type="integer >= 1", default="3", validator=_integer(1), pytype=int,
        doc="Failed health checks in a row that restart the app.",
    ),
    Setting(
        name="trigger", meta="HOST:PORT",
        type="HOST:PORT", default="", default_doc="off", validator=_trigger_address,
        doc="Serve POST /deploy at http://HOST:PORT from the poller (e.g. 127.0.0.1:9465): a hint to poll now, "
            "with trigger-token or a GitHub release webhook signed with trigger-secret.",
    ),
    Setting(
        name="trigger-token", meta="TOKEN",
        type="secret", default="", default_doc="none", validator=_text,
        doc="The bearer token POST /deploy must carry (Authorization: Bearer TOKEN).",
    ),
    Setting(
        name="trigger-secret", meta="SECRET",
        type="secret", default="", default_doc="none", validator=_text,
        doc="The GitHub webhook secret: X-Hub-Signature-256 must be the HMAC-SHA256 of the body with it.",
    ),
    Setting(
        name="graceful-timeout", meta="DURATION",
        type="duration", default="30s", validator=_duration(0.0), pytype=float,
        doc="How long an old generation may take to exit after the stop signal before it is killed.",
    ),
    Setting(
        name="stop-signal", meta="SIGNAL",
        type="signal", default="TERM", validator=_signal, pytype=int,
        doc="The signal asking a generation to exit gracefully: %s, with or without SIG, or its number."
            % ", ".join(STOP_SIGNALS),
    ),
    Setting(
        name="keep-releases", meta="N",
        type="integer >= 1", default="7", validator=_integer(1), pytype=int,
        doc="How many unpacked releases are kept in releases/: the newest N in deploy order, and always the one "
            "that served before the current one (a rollback needs it), so 1 keeps 2.",
    ),
    Setting(
        name="max-release-size", meta="SIZE",
        type="size", default="2GiB", validator=_size, pytype=int,
        doc="The most a release may unpack to (256MiB, 2GiB, 500MB or bytes), counted while unpacking: "
            "a bigger one is refused and its partial directory removed. A download past it stops there and "
            "is refused the same way.",
    ),
    Setting(
        name="max-release-files", meta="N",
        type="integer >= 1", default="100000", validator=_integer(1), pytype=int,
        doc="The most files, directories and links a release may unpack to; more is refused the same way.",
    ),
    Setting(
        name="backlog", meta="N",
        type="integer 1..65535", default="1024", validator=_integer(1, 65535), pytype=int,
        doc="The listen backlog of each socket.",
    ),
    Setting(
        name="dir", short="-d", meta="DIR",  # -d: Dewy's README spells it so (dewy assets -d /var/www/html)
        type="directory", default="", default_doc="none", validator=_path(required=False),
        doc="assets mode: a symlink kept pointing at the newest release (besides workdir/current). Relative like "
            "workdir.",
    ),
    # --- container mode (Dewy's `dewy container` flags; dewy.container.settings) ---
    Setting(
        name="name", meta="NAME",
        type="container name", default="", default_doc="the image name", validator=_container_name,
        doc="container mode: the app's name, in its containers' names and the dewy.app label.",
    ),
    Setting(
        name="replicas", meta="N",
        type="integer 1..100", default="1", validator=_integer(1, 100), pytype=int,
        doc="container mode: containers run per version (connections are spread over them).",
    ),
    Setting(
        name="health-path", meta="PATH",
        type="/PATH", default="", default_doc="none (a TCP connect)", validator=_url_path,
        doc="container mode: a new container is ready once GET PATH answers 2xx (else once its port accepts). "
            "On dewy server (as Dewy): ready = http:PATH:TIMEOUT, 2xx and 3xx healthy.",
    ),
    Setting(
        name="health-timeout", meta="DURATION",
        type="duration", default="30s", pytype=float,
        validator=_at_least(MIN_WORK_DURATION, "a shorter one refuses every good image"),
        doc="container mode: how long a new container may take to become ready before its image is refused "
            "(at least 100ms). On dewy server: the TIMEOUT of health-path's readiness check.",
    ),
    Setting(
        name="drain-time", meta="DURATION",
        type="duration", default="30s", validator=_duration(), pytype=float,
        doc="container mode: how long the old container's open connections may take to finish after the switch.",
    ),
    Setting(
        name="runtime", meta="NAME",
        type="docker|podman", default="docker", validator=_choice("docker", "podman"),
        doc="container mode: the container runtime command.",
    ),
    Setting(
        name="cmd", meta="CMD",
        type="command line", default="", default_doc="the image's CMD", validator=_app, pytype=tuple,
        doc="container mode: the command run in the container instead of the image's CMD, one shell-quoted line.",
    ),
    Setting(
        name="proxy-idle-timeout", meta="DURATION",
        type="duration", default="5m", pytype=float,
        validator=_zero_or_at_least(MIN_WORK_DURATION, "a shorter one cuts every connection that waits"),
        doc="container mode: a proxied connection idle this long is closed (0: never; else at least 100ms).",
    ),
    Setting(
        name="container-args", cli="dewy container [options] -- RUN-OPTION...",
        type="command line", default="", default_doc="none", validator=_app, pytype=tuple,
        doc="container mode: options for docker/podman run (-e KEY=VALUE, -v SRC:DST, --env-file...): after -- "
            "on the command line, one shell-quoted line in ini.",
    ),
    Setting(
        name="hook-timeout", meta="DURATION",
        type="duration", default="5m", pytype=float,
        validator=_at_least(MIN_WORK_DURATION, "a shorter one kills every hook, failing every deploy"),
        doc="How long a deploy hook may run before it is killed and counts as failed (at least 100ms).",
    ),
    Setting(
        name="verify-checksum", meta="WHEN",
        type=_one_of(CHECKSUM_POLICIES), default="auto", validator=_choice(*CHECKSUM_POLICIES),
        doc="Check the artifact against the checksum published beside it (checksums.txt, SHA256SUMS, "
            "<artifact>.sha256, GitHub's asset digest): auto when there is one, required refuses a release "
            "without one, off never checks.",
    ),
    Setting(
        name="poll-backoff-max", meta="DURATION",
        type="duration", default="5m", pytype=float,
        validator=_zero_or_at_least(MIN_INTERVAL, "polling more often only burns CPU"),
        doc="While the registry fails, the poll interval doubles up to this; the first success resets it. "
            "0 = no backoff (what Dewy's max-backoff-interval flag of 0 means); else at least 100ms.",
    ),
    Setting(
        name="rollback", meta="WHEN",
        type="on|off", default="on", validator=_choice("on", "off"),
        doc="off (Dewy's no-rollback flag): a new release that fails its readiness check (ready = notify or http) "
            "serves anyway and the old one retires, the failure logged and notified; a crash-looping release "
            "is restarted, never rolled back.",
    ),
    Setting(
        name="otlp-endpoint", meta="HOST:PORT",
        type="HOST:PORT", default="", default_doc="off", validator=_otlp_endpoint,
        doc="Export dewy's metrics (Dewy's dewy.* names) and its deploy events as log records by OTLP over "
            "gRPC to HOST:PORT (needs the [otel] extra); TLS unless otlp-insecure.",
    ),
    Setting(
        name="otlp-insecure", cli="--otlp-insecure",
        type="true|false", default="false", validator=_choice("true", "false"),
        doc="Send OTLP in plaintext instead of TLS.",
    ),
    Setting(
        name="metrics", meta="HOST:PORT",
        type="HOST:PORT", default="", default_doc="off", validator=_metrics_address,
        doc="Serve Prometheus metrics (dewy_...) at http://HOST:PORT/metrics from the poller, e.g. 127.0.0.1:9464.",
    ),
    Setting(
        name="rollout-waves", meta="PERCENTAGES",
        type="percentages", default="", default_doc="off (every host deploys at once)", validator=_waves,
        pytype=tuple,
        doc="Roll each new version out over the hosts sharing the cache in waves (10%, 50%, then everyone); "
            "needs a shared cache. A version that fails on any host is refused fleet-wide (see Running a fleet).",
    ),
    Setting(
        name="rollout-soak", meta="DURATION",
        type="duration", default="5m", validator=_duration(0.0), pytype=float,
        doc="How long every host of a wave must serve the new version, without a rollback, before the next "
            "wave starts.",
    ),
    Setting(
        name="host-id", meta="ID",
        type="name", default="", default_doc="the hostname", validator=_host_id,
        doc="This host's name in the fleet (its heartbeat in the shared cache, `dewy fleet`), in notifications, "
            "the audit log and the shipped_to records; unique per host.",
    ),
    Setting(
        name="user", meta="USER",
        type="user name", default="", default_doc="the master's own user",
        validator=_account("user", "to run everything as the master's own user"),
        doc="Run the app generations, the poller (downloads, unpacking) and the hooks as this user; the master "
            "stays root (ports, systemd) and gives .dewy/ and releases/ to the user. Needs a root master.",
    ),
    Setting(
        name="group", meta="GROUP",
        type="group name", default="", default_doc="the user's primary group",
        validator=_account("group", "for the user's primary group"),
        doc="The group the app, the poller and the hooks run as (only with user).",
    ),
    Setting(
        name="app-env-keep", meta="NAMES",
        type="names", default="", default_doc="none", validator=_env_names, pytype=tuple,
        doc="Credential variables of dewy's environment the app and the hooks get all the same (comma-separated, "
            "such as AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); by default none of them (see SECURITY.md).",
    ),
]

BY_NAME = {s.name: s for s in SETTINGS}


# --- Config ------------------------------------------------------------------------------------

# Config (dewy.configtype, re-exported here) has one attribute per setting: SETTINGS' attrs, and `source`.
CONFIG_ATTRIBUTES = Config.ATTRIBUTES = tuple(s.attr for s in SETTINGS)


# --- building a Config from raw values ---------------------------------------------------------

@dataclass(frozen=True)
class _Source:
    """Where raw values came from: names keys and values in messages, anchors relative paths."""

    name: str
    base_dir: str
    ini: bool

    def label(self, s: Setting) -> str:
        """How this source spells a setting: `[dewy] key` in an ini file, the flag on the command line."""
        if self.ini:
            return "[%s] %s" % (SECTION, s.name)
        return s.flag or s.cli or s.name

    def bad(self, s: Setting, shown, message: str) -> ConfigError:
        """The error for a bad value of s: source, key, quoted value, what is allowed."""
        if isinstance(shown, (list, tuple)):
            import shlex

            shown = shlex.join(shown) if s.name == "app" else ",".join(shown)
        quoted = json.dumps(redact(shown), ensure_ascii=False)
        text = redact_text("%s: %s = %s: %s" % (self.name, self.label(s), quoted, message))
        if s.name == "notifier":
            text = _without_url_paths(text, str(shown))
        return ConfigError(text)

    def error(self, s: Setting, message: str) -> ConfigError:
        """An error about s that has no value to quote (a missing required setting)."""
        return ConfigError("%s: %s %s" % (self.name, self.label(s), message))


def _parse_value(s: Setting, raw, source: _Source):
    """Validate one raw value of s, turning the validator's complaint into a one-line ConfigError."""
    if any("\0" in item for item in (raw if isinstance(raw, (list, tuple)) else [raw])):
        # No path, command or URL can hold one (the OS refuses it with a ValueError far from here).
        raise source.bad(s, raw, "contains a NUL character; no setting takes one")
    if source.ini and s.type == "URL" and isinstance(raw, str) and _SEMICOLON_COMMENT.search(raw):
        raise source.bad(s, raw, "a ; after a space is no comment in dewy's ini files: comments start with # (after "
                                 "a space, or at the start of a line); a ; that belongs to the URL is written %3B")
    try:
        return s.validator(raw, source.base_dir)
    except ValueError as exc:
        shown = exc.shown if isinstance(exc, BadValue) and exc.shown is not None else raw
        raise source.bad(s, shown, str(exc)) from None


def _as_text(raw):
    """raw with numbers a Python caller passed (port=8000) turned into the text a user would write."""
    if isinstance(raw, (list, tuple)):
        return [str(item) for item in raw]
    return raw if isinstance(raw, str) else str(raw)


def _given(raw) -> bool:
    """Whether a raw value was actually given (docopt reports unset flags as None, unset repeats as [])."""
    return raw is not None and raw != []


def _default(s: Setting):
    """The parsed default of s; relative default paths mean the current directory, whatever the source."""
    return s.validator(s.default, os.getcwd())


def _resolve_app(app: tuple, workdir: str) -> tuple:
    """argv with a relative argv[0] that contains a "/" (current/bin/app) made absolute against workdir."""
    if app and "/" in app[0] and not os.path.isabs(app[0]):
        return (os.path.join(workdir, app[0]),) + app[1:]
    return app


def _check_mode(values: dict, raw: dict, source: _Source) -> None:
    """The rules that tie settings together: server needs an app, assets must not have one."""
    app = BY_NAME["app"]
    if values["mode"] == "server" and not values["app"]:
        example = "app = current/bin/server --flag" if source.ini else "dewy server [options] -- CMD [ARG...]"
        raise source.error(app, "is required in server mode (the command to run, e.g. %s)" % example)
    if values["mode"] == "assets" and values["app"]:
        raise source.bad(app, _as_text(raw["app"]), "must be empty in assets mode (assets runs no process)")
    # The trigger's secrets may come from the environment (the unit's EnvironmentFile), not the ini.
    values["trigger_token"] = values["trigger_token"] or os.environ.get("DEWY_TRIGGER_TOKEN", "").strip()
    values["trigger_secret"] = values["trigger_secret"] or os.environ.get("DEWY_TRIGGER_SECRET", "").strip()
    if values["trigger"] and not (values["trigger_token"] or values["trigger_secret"]):
        raise source.bad(BY_NAME["trigger"], _as_text(raw["trigger"]),
                         "needs trigger-token or trigger-secret, or DEWY_TRIGGER_TOKEN / DEWY_TRIGGER_SECRET in the "
                         "environment (an open trigger would let anyone make dewy poll)")
    if values["group"] and not values["user"]:
        raise source.bad(BY_NAME["group"], _as_text(raw["group"]),
                         "needs user (group is the group the user's processes run as)")
    if values["rollout_waves"]:
        from dewy.cache import LOCAL_SCHEMES

        scheme = values["cache"].partition(":")[0].lower()
        if scheme in LOCAL_SCHEMES:
            raise source.bad(BY_NAME["rollout-waves"], _as_text(raw["rollout-waves"]),
                             "needs a cache the fleet shares (redis://, consul://, s3://, gs://); cache = %s "
                             "is this host's alone" % scheme)
    _check_addresses(values, raw, source)
    _check_cache_dir(values, raw, source)
    # An HTTP check asks the first TCP listener: without one there is nobody to ask.
    for name in ("ready", "health"):
        value = values[BY_NAME[name].attr]
        if (name == "health" and value) or (name == "ready" and value.kind == "http"):
            if values["mode"] != "server" or not any(not p.startswith("unix:") for p in values["port"]):
                raise source.bad(BY_NAME[name], _as_text(raw[name]),
                                 "needs server mode and a TCP port (the check asks the first TCP listener)")


def _check_addresses(values: dict, raw: dict, source: _Source) -> None:
    """metrics and trigger each need an address of their own: not one a `port` entry (or the other) takes.
    They are the poller's HTTP servers, which listen dual-stack: their [::] takes every IPv4 address too."""
    taken = [("port", spec, listen_identity(spec), False) for spec in values["port"]]
    for name in ("metrics", "trigger"):
        address = values[name]
        if not address:
            continue
        host, number = parse_address(address)
        identity = (host.lower(), number)
        for other, spec, other_identity, other_dual in taken:
            if not overlap(identity, other_identity, True, other_dual):
                continue
            if other == "port":
                wildcard = "0.0.0.0:%d" % number if host == "0.0.0.0" else address
                note = _wildcard_note(spec, wildcard)
                if _scope(identity) == (6, "*") and (_scope(other_identity) or (None,))[0] == 4:
                    note = " (%s = [::] listens dual-stack: on every IPv6 and every IPv4 address)" % name
                message = 'overlaps port "%s"%s: both would take the same address; give %s a port of its own' % (
                    spec, note, name)
            else:
                message = 'overlaps %s = "%s": both would take the same address; give each a port of its own' % (
                    other, spec)
            raise source.bad(BY_NAME[name], _as_text(raw[name]), message)
        taken.append((name, address, identity, True))


def _check_cache_dir(values: dict, raw: dict, source: _Source) -> None:
    """A local cache directory that can never exist (a file on its path, no write access) is a config error,
    not a poller failing at every start. The default (workdir/.dewy/cache) is workdir.check's."""
    parsed_scheme, _, rest = values["cache"].partition(":")
    scheme = parsed_scheme.lower()
    if scheme == "file" and rest:
        from dewy import urls

        directory, origin = urls.parse(values["cache"]).path, ""
    elif scheme != "memory" and os.environ.get("DEWY_CACHEDIR"):
        directory, origin = os.environ["DEWY_CACHEDIR"], " (from $DEWY_CACHEDIR)"
    else:
        return
    from dewy.cache.file import dir_problem

    problem = dir_problem(directory)
    if problem:
        raise source.bad(BY_NAME["cache"], _as_text(raw.get("cache") or "file"), problem + origin)


def _warnings(values: dict, raw: dict, source: _Source) -> list[str]:
    """Settings that are valid but do nothing here: worth a warning (at start and for --check), not a refusal."""
    found = []
    if _given(raw.get("rollout-soak")) and not values["rollout_waves"]:
        found.append(source.bad(BY_NAME["rollout-soak"], _as_text(raw["rollout-soak"]),
                                "has no effect without rollout-waves (every host deploys at once)"))
    if _given(raw.get("dir")) and values["mode"] == "server":
        found.append(source.bad(BY_NAME["dir"], _as_text(raw["dir"]),
                                "has no effect in server mode (only assets mode keeps that symlink)"))
    return [str(warning) for warning in found]


def _container_ports(raw: dict, source: _Source) -> tuple:
    """(raw with `port` reduced to the listen side, [container port per listener]) for container mode."""
    from dewy.container.settings import split_ports

    entries = _as_text(raw.get("port") or [])
    entries = [entries] if isinstance(entries, str) else entries
    try:
        listen, ports = split_ports(entries)
    except ValueError as exc:
        raise source.bad(BY_NAME["port"], entries, str(exc)) from None
    if not listen:
        raise source.error(BY_NAME["port"], "is required in container mode (PROXY:CONTAINER, e.g. 8080:80)")
    return dict(raw, port=listen), ports


def _container_values(values: dict, raw: dict, source: _Source, ports: list) -> None:
    """container mode: an img:// registry, no app (dewy runs the generation), ready = notify, a stop long
    enough to drain; the app command becomes the container generation with its spec."""
    from dewy.container import settings

    if not values["registry"].lower().startswith("img://"):
        raise source.bad(BY_NAME["registry"], raw["registry"], "must be an img:// URL in container mode "
                         "(img://REGISTRY/REPO, e.g. img://ghcr.io/owner/app)")
    if values["app"]:
        raise source.bad(BY_NAME["app"], _as_text(raw["app"]), "must be empty in container mode (the image runs; "
                         "run options go in container-args)")
    problem = settings.args_problem(values["container_args"])
    if problem:
        raise source.bad(BY_NAME["container-args"], _as_text(raw["container-args"]), problem)
    if len(ports) != len(values["port"]):
        raise source.bad(BY_NAME["port"], _as_text(raw["port"]), "a port range takes no container port in "
                         "container mode: give one PROXY:CONTAINER entry per port")
    spec = settings.generation_spec(values, ports)
    values["app"] = settings.app_argv(spec)
    if _given(raw.get("ready")) and values["ready"].kind != "notify":
        raise source.bad(BY_NAME["ready"], _as_text(raw["ready"]), "must be notify[:TIMEOUT] in container mode (a "
                         "container is ready when its port, and health-path if set, answer)")
    if not _given(raw.get("ready")):
        from dewy.container.runtime import PULL_TIMEOUT

        values["ready"] = Ready("notify", PULL_TIMEOUT + values["health_timeout"] + 60.0)
    if not _given(raw.get("graceful-timeout")):
        values["graceful_timeout"] = max(values["graceful_timeout"], values["drain_time"] + spec["stop_timeout"] + 20)
    # Last: every other mistake is named first, whatever this host has installed.
    if shutil.which(values["runtime"]) is None:  # else every image would be refused for the host's fault
        raise source.bad(BY_NAME["runtime"], _as_text(raw.get("runtime") or values["runtime"]),
                         "%s is not installed (not found in PATH)" % values["runtime"])


def _build(raw: dict, source: _Source, warnings: list | None = None) -> Config:
    """Validate raw values (setting name -> raw text/list), fill in defaults, check cross-setting rules;
    the warnings (one line each) are appended to `warnings` when given."""
    unknown = sorted(set(raw) - set(BY_NAME))
    if unknown:
        raise ConfigError("%s: unknown setting %s" % (source.name, ", ".join(unknown)))
    values = {}
    container = None
    if str(raw.get("mode") or "").strip().lower() == "container":  # ports are PROXY:CONTAINER there
        raw, container = _container_ports(raw, source)
    for s in SETTINGS:
        if _given(raw.get(s.name)):
            values[s.attr] = _parse_value(s, _as_text(raw[s.name]), source)
        elif s.default is None:
            example = "%s = %s" % (s.name, s.example) if source.ini else "%s %s" % (s.flag, s.example)
            raise source.error(s, "is required (e.g. %s)" % example)
        else:
            values[s.attr] = _default(s)
    if container is not None:
        _container_values(values, raw, source, container)
    _check_mode(values, raw, source)
    if warnings is not None:
        warnings.extend(_warnings(values, raw, source))
    values["app"] = _resolve_app(values["app"], values["workdir"])
    return Config(**values, source=source.name)


def from_options(values: dict, source: str = CLI_SOURCE, base_dir: str | None = None,
                 warnings: list | None = None) -> Config:
    """A Config from command-line values: setting name -> str, list (repeatable flags, app argv) or None (unset).

    Relative paths resolve against base_dir (default: the current directory). Warnings about settings that
    have no effect (one line each) are appended to `warnings` when given.
    """
    return _build(dict(values), _Source(source, base_dir or os.getcwd(), ini=False), warnings)


# --- ini files ---------------------------------------------------------------------------------

# Secrets read from the environment only (SECURITY.md): an ini naming them is told where they go.
ENV_ONLY = {"cache-key": "DEWY_CACHE_KEY"}


def _unknown_key(path: str, key: str) -> ConfigError:
    """The error for a key no setting has, suggesting the closest ones."""
    import difflib

    close = difflib.get_close_matches(key, list(BY_NAME), n=3, cutoff=0.6)
    if key.strip().lower() in ENV_ONLY:  # a secret: the ini is usually world-readable
        hint = "set %s in the environment (the unit's EnvironmentFile), never in the ini" % ENV_ONLY[key.strip().lower()]
    elif close:
        hint = "did you mean %s?" % " or ".join('"%s"' % c for c in close)
    else:
        hint = "valid keys: %s" % ", ".join(BY_NAME)
    return ConfigError('%s: [%s] unknown key %s (%s)' % (path, SECTION, json.dumps(key), hint))


def _parse_error(path: str, exc: Exception) -> ConfigError:
    """configparser's multi-line complaint as one line naming the file and line."""
    import configparser

    if isinstance(exc, configparser.DuplicateOptionError):
        text = '[%s] duplicate key "%s" (line %s)' % (exc.section, exc.option, exc.lineno)
    elif isinstance(exc, configparser.DuplicateSectionError):
        text = "duplicate section [%s] (line %s)" % (exc.section, exc.lineno)
    elif isinstance(exc, configparser.MissingSectionHeaderError):
        text = "line %s: %s before any section; expected [%s] first" % (
            exc.lineno, json.dumps(exc.line.strip()), SECTION)
    elif isinstance(exc, configparser.ParsingError) and exc.errors:
        lineno, line = exc.errors[0]
        line = line[1:-1] if line[:1] in "'\"" else line  # configparser hands us repr(line)
        text = "line %s: cannot parse %s; expected key = value" % (lineno, json.dumps(line.replace("\\n", "").strip()))
    else:
        text = " ".join(str(exc).split())
    return ConfigError(redact_text("%s: %s" % (path, text)))


def _continuation_lines(text: str):
    """(line number, line, section, key) for each indented line configparser appends to the value above it.

    Mirrors configparser's rule (as configured in _read_section): a line indented deeper than the key line
    before it continues that key's value, unless a blank or comment line came between.
    """
    section = key = None
    key_indent = 0
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            key_indent = sys.maxsize  # a blank or comment line ends a value
            continue
        indent = len(line) - len(line.lstrip())
        if key is not None and indent > key_indent:
            yield number, stripped, section, key
            continue
        key_indent = indent
        header = re.match(r"\[(.+)\]", stripped)  # configparser's SECTCRE and OPTCRE, keys lower-cased
        option = re.match(r"(.*?)\s*[=:]", stripped)
        if header:
            section, key = header[1], None
        else:
            key = option[1].lower() if option else None


def _check_continuations(path: str, text: str) -> None:
    """Refuse an indented line that continues a single-line setting; only list settings may span lines.

    `app = x` followed by `  port = 1234` would otherwise run x with the arguments `port = 1234` and
    listen nowhere. A list setting (`multiple`: port) may go on over indented lines.
    """
    for number, line, section, key in _continuation_lines(text):
        s = BY_NAME.get(key) if section == SECTION else None
        if s is not None and not s.multiple:
            line = re.sub(r"\s#.*", "", line).rstrip()  # its inline comment is no part of it (configparser's rule)
            # The line may be the query of a URL begun above (`?token=...`, `&sig=...`): redact it as one.
            shown = redact(line) if "?" in line else redact("?" + line)[1:]
            lists = " and ".join(t.name for t in SETTINGS if t.multiple)
            raise ConfigError(redact_text(
                "%s: line %d: %s is indented, so it would continue [%s] %s, which takes one line; remove the "
                "indentation (only %s may continue on indented lines)" % (
                    path, number, json.dumps(shown, ensure_ascii=False), SECTION, key, lists)))


def _read_section(path: str) -> dict:
    """The raw `[dewy]` key -> value pairs of an ini file; ConfigError for anything unreadable or foreign."""
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is skipped, not read as part of "[dewy]".
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError:
        raise ConfigError("%s: cannot read: not UTF-8 text" % path) from None
    # A [DEFAULT] section would silently leak keys into [dewy]: give configparser a name nobody uses.
    import configparser

    # Comments: a line starting with # or ;, and everything from a # that follows whitespace (`key = value  # note`),
    # for every key (README "Configuration reference"); a # of a value is written without whitespace before it,
    # or %23 in a URL. An inline ; is no comment: shell commands (app, hooks) say `a ; b`.
    parser = configparser.ConfigParser(interpolation=None, strict=True, default_section="\0",
                                       empty_lines_in_values=False, inline_comment_prefixes=("#",))
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise _parse_error(path, exc) from None
    for section in parser.sections():
        if section != SECTION:
            raise ConfigError("%s: unknown section [%s]; dewy reads only [%s]" % (path, section, SECTION))
    if not parser.has_section(SECTION):
        raise ConfigError("%s: no [%s] section" % (path, SECTION))
    _check_continuations(path, text)
    values = dict(parser.items(SECTION))
    _check_hash_in_file_urls(path, text, values)
    return values


def _check_hash_in_file_urls(path: str, text: str, values: dict) -> None:
    """Refuse a file:// URL whose inline comment starts right after its ` #` (`file:///tmp/x #1/reg`): a # after
    a space starts a comment, which would silently cut the path to `/tmp/x`, while in a file:// URL a # is part
    of the path; nothing tells which was meant. `# note` (a space after the #) is a comment."""
    import configparser

    keys = [key for key, value in values.items() if key in BY_NAME and BY_NAME[key].type == "URL"
            and value[:5].lower() == "file:"]
    if not keys:
        return
    whole = configparser.ConfigParser(interpolation=None, strict=False, default_section="\0",
                                      empty_lines_in_values=False)  # no inline comments: the values as written
    whole.read_string(text, source=path)
    for key in keys:
        written = whole.get(SECTION, key, fallback="")
        cut = re.search(r"\s#\S", written)
        if cut:
            raise ConfigError(redact_text("%s: [%s] %s = %s: a # after a space starts a comment, which would cut "
                                          "the URL to %s; a # of the path is written %%23 (%s), a comment's # is "
                                          "followed by a space" % (
                path, SECTION, key, json.dumps(redact(written.strip()), ensure_ascii=False), redact(values[key]),
                redact(written[:cut.start() + 1] + "%23" + written[cut.start() + 2:].strip()))))


def load_ini(path: str, warnings: list | None = None) -> Config:
    """The Config in the `[dewy]` section of the ini file at path; ConfigError naming file, key and value.

    Warnings about settings that have no effect (one line each) are appended to `warnings` when given.
    """
    raw = _read_section(path)
    for key in raw:
        if key not in BY_NAME:
            raise _unknown_key(path, key)
    source = _Source(path, os.path.dirname(os.path.abspath(path)), ini=True)
    return _build(raw, source, warnings)


# --- documentation -----------------------------------------------------------------------------

def option_spec(s: Setting) -> str:
    """The flag part of a usage option line, e.g. `-p PORT, --port PORT`."""
    long = "%s %s" % (s.flag, s.meta)
    return "%s %s, %s" % (s.short, s.meta, long) if s.short else long


def default_text(s: Setting) -> str:
    """How the reference shows the default of s."""
    if s.default is None:
        return "required"
    return s.default_doc or s.default


def usage_options(width: int = 34, columns: int = 110) -> list[str]:
    """The docopt `Options:` lines for every setting that has a flag, in SETTINGS order, wrapped to columns."""
    lines = []
    indent = " " * (width + 4)
    for s in SETTINGS:
        if not s.flag:
            continue
        head = "  %-*s  " % (width, option_spec(s))
        doc = "%s (default: %s)" % (s.doc, default_text(s))
        # docopt reads a continuation line starting with "-" as a new option: never break before one.
        import textwrap

        lines += textwrap.wrap(doc, columns, initial_indent=head, subsequent_indent=indent,
                               break_on_hyphens=False, break_long_words=False)
    return lines


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README configuration reference: one row per setting."""
    rows = ["| ini key | command line | value | default | description |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        flag = option_spec(s) if s.flag else s.cli
        rows.append("| `%s` | %s | %s | %s | %s |" % (
            s.name, _cell(flag), _cell(s.type), _cell(default_text(s)), _cell(s.doc)))
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m dewy.config --markdown`: print the configuration reference table."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--markdown"]:
        print("usage: python -m dewy.config --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
