"""Parsers of the value forms that settings and backend URLs share: durations, sizes, HOST:PORT addresses.

Below dewy.config and the backends alike (standard library only), so that a cache URL's `?registry-ttl=` and
the config's `interval` read durations the same way without the backends importing the config, and the
config checks a `metrics` address without importing the poller.
"""

import math
import re

MAX_DURATION = 365 * 86400.0
DURATION_HELP = "expected a duration such as 500ms, 10s, 1m or plain seconds"

NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"  # a decimal number, as durations and sizes write it
_PLAIN_SECONDS = re.compile(NUMBER)
_DURATION = re.compile(r"(?:%s(?:ms|s|m|h))+" % NUMBER)
_DURATION_PART = re.compile(r"(%s)(ms|s|m|h)" % NUMBER)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadValue(ValueError):
    """A validator's complaint about a value; `shown` is the part of the raw value to quote, if not all of it."""

    def __init__(self, message: str, shown: str | None = None):
        super().__init__(message)
        self.shown = shown


def parse_duration(text: str) -> float:
    """Seconds in `500ms`, `10s`, `1m`, `1h`, `1m30s`, `1.5s` or plain seconds (`10`, `0.5`); BadValue otherwise."""
    text = text.strip()
    if _PLAIN_SECONDS.fullmatch(text):
        seconds = float(text)
    elif _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    else:
        raise BadValue(DURATION_HELP)
    if not math.isfinite(seconds):
        raise BadValue(DURATION_HELP)
    if seconds > MAX_DURATION:
        # Timers past this overflow the clocks they are set on (and mean "never" anyway).
        raise BadValue("%s, at most 365 days" % DURATION_HELP)
    return seconds


def parse_address(text: str) -> tuple[str, int]:
    """`127.0.0.1:9464`, `[::1]:9464`, `:9464` (all interfaces) -> (host, port); ValueError otherwise."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port = rest[1:] if bracket and rest.startswith(":") else ""
    else:
        host, colon, port = text.rpartition(":")
        port = port if colon else ""  # a bare port would mean every interface: say so with ":9464"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:9464, [::1]:9464 or :9464")
    return host or "0.0.0.0", int(port)


SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
              "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}
SIZE_HELP = "expected a size such as 256MiB, 2GiB, 500MB or plain bytes (kB/MB/GB = 1000^n, KiB/MiB/GiB = 1024^n)"
_SIZE = re.compile(r"(%s)\s*([A-Za-z]*)" % NUMBER)


def parse_size(text: str) -> int:
    """Bytes in `256MiB`, `2GiB`, `500MB`, `1.5GB` or plain bytes (`1048576`); BadValue otherwise (or below 1 byte)."""
    match = _SIZE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else None
    if unit not in SIZE_UNITS:
        raise BadValue(SIZE_HELP)
    size = int(float(match.group(1)) * SIZE_UNITS[unit])
    if size < 1:
        raise BadValue(SIZE_HELP + ", at least 1 byte")
    return size


def format_size(size: int) -> str:
    """A byte count the way a user would write it: `2 GiB`, `500 MB`, `256 MiB`, else `12345 bytes`."""
    for unit in ("TiB", "TB", "GiB", "GB", "MiB", "MB", "KiB", "kB"):
        factor = SIZE_UNITS[unit.lower()]
        if size >= factor and size % factor == 0:
            return "%d %s" % (size // factor, unit)
    return "%d bytes" % size
