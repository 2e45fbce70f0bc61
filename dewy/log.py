"""Logging for dewy's processes: one record a line on stderr, as text or JSON; URL redaction.

Text:  2026-11-26T06:50:12.123Z INFO dewy.master[1234]: message key=value
JSON:  {"time": "...", "level": "info", "logger": "dewy.master", "pid": 1234, "msg": "...", "key": "value"}

Under systemd (JOURNAL_STREAM names the stream dewy's stderr is) each line starts with its syslog priority,
`<3>` error, `<4>` warning, `<6>` info, `<7>` debug, which journald takes as the entry's priority
(`journalctl -p err -u dewy`), and text lines drop their timestamp (the journal has its own):
       <6>INFO dewy.master[1234]: message key=value

Extra fields (`log.info("deployed", extra={"version": "1.2.3"})`) are appended to the text line and
become keys of the JSON object, so log shippers can index them. `with fields(version="1.2.3"):` attaches
fields to every record logged inside the block (one deploy followed through its lines); `pid` is always
there. Values of secret environment variables (SLACK_TOKEN, MAIL_PASSWORD...) never reach a line: `scrub`.
"""

import contextlib
import contextvars
import json
import os
import logging
import re
import sys

from dewy.clock import utc_iso

# The log levels and formats dewy accepts, declared here once (dewy.config's log-level/log-format use them).
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LEVEL_ALIASES = {"warn": "warning"}  # accepted on input, never shown as a choice
FORMATS = ("text", "json")
REDACTED = "***"

# Every attribute a plain LogRecord has; anything else on a record came in through `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

# Query keys whose values are credentials (GitHub/Slack tokens, S3 presigned URLs, passwords...).
_SECRET_KEY = re.compile(r"token|secret|passw|pwd|key|signature|credential|auth|session|^sig$|^x-amz-", re.I)
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@:]*):(?P<password>[^/?#]*)@")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


# Environment variables holding credentials: their values are masked wherever dewy writes text.
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|_KEY$|_PASS$|CREDENTIALS?$", re.I)
_MIN_SECRET = 6  # shorter values are too likely to occur by chance ("true", a port number)

_context = contextvars.ContextVar("dewy_log_fields", default={})


def extra_fields(record: logging.LogRecord) -> dict:
    """The fields a caller attached to record with `extra=` (in the order given), after the context's."""
    given = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}
    context = _context.get()
    return dict(context, **given) if context else given


@contextlib.contextmanager
def fields(**values):
    """Attach values (None ones are skipped) to every record logged in this block (and this thread)."""
    token = _context.set(dict(_context.get(), **{k: v for k, v in values.items() if v is not None}))
    try:
        yield
    finally:
        _context.reset(token)


def secret_values() -> list:
    """The values of secret-named environment variables (longest first), read now."""
    found = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET}
    return sorted(found, key=len, reverse=True)


def scrub(value, secrets=None):
    """value with URLs redacted and every secret environment value masked (strings only; others as given)."""
    if not isinstance(value, str):
        return value
    value = redact_text(value)
    for secret in secret_values() if secrets is None else secrets:
        if secret in value:
            value = value.replace(secret, REDACTED)
    return value


def _logfmt_value(value) -> str:
    """value as it reads after `key=` on a text line: bare when it has no spaces or quotes."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or re.search(r'[\s"=]', text):
        return json.dumps(text)
    return text


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a log level: 3 error (2 critical), 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


def on_journal(fd: int = 2) -> bool:
    """Whether fd is the journal stream systemd connected (JOURNAL_STREAM=DEV:INODE names it; a child whose
    stderr was redirected elsewhere inherits the variable, so the file itself must be that stream)."""
    dev, sep, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _journal_line(record: logging.LogRecord, text: str) -> str:
    """text with `<priority>` before each of its lines (a traceback's lines too: journald reads them apart)."""
    prefix = "<%d>" % syslog_priority(record.levelno)
    return prefix + text.replace("\n", "\n" + prefix)


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger[pid]: message key=value...` for people reading a terminal or the journal."""

    def __init__(self, name: str, journal: bool = False):
        super().__init__()
        self.default_name = name
        self.journal = journal  # `<priority>LEVEL logger[pid]: ...`: no timestamp, journald has its own

    def format(self, record: logging.LogRecord) -> str:
        """One text line (plus a traceback when the record carries one)."""
        logger = self.default_name if record.name == "root" else record.name
        line = "%s %s[%d]: %s" % (record.levelname, logger, record.process, record.getMessage())
        if not self.journal:
            line = utc_iso(record.created, millis=True) + " " + line
        fields = " ".join("%s=%s" % (k, _logfmt_value(v)) for k, v in extra_fields(record).items())
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub_line(_journal_line(record, line) if self.journal else line)


class JSONFormatter(logging.Formatter):
    """One JSON object a line, for log shippers; extra fields become keys."""

    def __init__(self, name: str, journal: bool = False):
        super().__init__()
        self.default_name = name
        self.journal = journal  # `<priority>{...}`: journald strips the prefix, the message stays JSON

    def format(self, record: logging.LogRecord) -> str:
        """The record as a compact JSON object on one line."""
        data = {
            "time": utc_iso(record.created, millis=True),
            "level": record.levelname.lower(),
            "logger": self.default_name if record.name == "root" else record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            data.setdefault(key, value)  # never let an extra field overwrite the fixed ones
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        line = json.dumps(data, default=str, separators=(",", ":"))
        return scrub_line(_journal_line(record, line) if self.journal else line)


_SECRETS = []  # secret_values() as of setup(): the environment does not change under a running process


def scrub_line(line: str) -> str:
    """A formatted log line with the secret environment values masked."""
    for secret in _SECRETS:
        if secret in line:
            line = line.replace(secret, REDACTED)
    return line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (it may be replaced after setup)."""

    def __init__(self):
        logging.Handler.__init__(self)  # not StreamHandler's: it would pin the stream at setup time

    @property
    def stream(self):
        """The current sys.stderr."""
        return sys.stderr


QUIET_LIBRARIES = ("urllib3", "botocore", "boto3", "s3transfer", "google", "grpc", "requests_oauthlib",
                   "slack_sdk")  # slack_sdk logs each request (headers, bodies) at debug


def setup(level: str, fmt: str, name: str) -> logging.Logger:
    """Send the root logger's records at `level` and above to stderr as `fmt` (text|json).

    Idempotent: a second call replaces the handler of the first. `name` labels records logged on the
    root logger; the logger of that name is returned for convenience.
    """
    name_of_level = LEVEL_ALIASES.get(level.lower(), level.lower())
    if name_of_level not in LEVELS:
        raise ValueError('unknown log level "%s"; allowed: %s' % (level, ", ".join(LEVELS)))
    if fmt not in FORMATS:
        raise ValueError('unknown log format "%s"; allowed: %s' % (fmt, ", ".join(FORMATS)))
    _SECRETS[:] = secret_values()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_dewy", False)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler._dewy = True
    journal = on_journal()
    handler.setFormatter(JSONFormatter(name, journal) if fmt == "json" else TextFormatter(name, journal))
    root.addHandler(handler)
    root.setLevel(LEVELS[name_of_level])
    # Libraries' debug output is not dewy's to show: urllib3 logs every URL it fetches (presigned
    # storage URLs with their signatures), botocore logs request headers. Even at log-level = debug.
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
    return logging.getLogger(name)


def _redact_query(query: str) -> str:
    """query with the values of secret-looking keys replaced; everything else kept byte for byte."""
    pairs = []
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and value and _SECRET_KEY.search(key):
            pairs.append(key + sep + REDACTED)
        elif sep and ("://" in value or "%3a%2f%2f" in value.lower()):
            # A URL inside the query (?endpoint=http://key:pw@host, or percent-encoded): redact it too.
            import urllib.parse  # only here: the master never needs it otherwise

            inner = urllib.parse.unquote(value)
            redacted = redact(inner)
            pairs.append(pair if redacted == inner else key + sep + urllib.parse.quote(redacted, safe=":/@*"))
        else:
            pairs.append(pair)
    return "&".join(pairs)


def redact(url: str) -> str:
    """url without credentials: the userinfo password and secret-looking query values become ***.

    Text that is not a URL, or a URL without credentials, comes back unchanged.
    """
    if not isinstance(url, str) or not url:
        return url
    url = _USERINFO.sub(lambda m: m["head"] + m["user"] + ":" + REDACTED + "@", url, count=1)
    base, qmark, rest = url.partition("?")
    if not qmark:
        return url
    query, hash_, fragment = rest.partition("#")
    return base + qmark + _redact_query(query) + hash_ + fragment


def redact_text(text: str) -> str:
    """text with every URL in it redacted (for error messages that may quote a URL)."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)
