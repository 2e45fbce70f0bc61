"""Dewy's own flags (linyows/dewy, cli.go) on `dewy server|assets`, so a Dewy command line runs unchanged.

Each flag is an alias: translate() turns it into dewy's settings (so do --health-path/--health-timeout, which
are container mode's settings and become `ready` on `dewy server`) (dewy.config.SETTINGS, where every setting
is declared once) before the Config is built. Units are Dewy's (whole seconds); a flag given together with
the setting it maps onto is a usage error rather than a silent choice between the two.
"""

from dataclasses import dataclass
from urllib.parse import quote

from dewy.config import ConfigError, parse_duration

ADMIN_METRICS = "127.0.0.1:17539"  # Dewy's admin API (localhost:17539), where --telemetry serves /metrics
HEALTH_TIMEOUT = 30  # Dewy's --health-timeout default, seconds


class FlagError(ConfigError):
    """A Dewy flag with a bad value, or in conflict with the dewy setting it maps onto (one line)."""


@dataclass(frozen=True)
class DewyFlag:
    """One Dewy flag: its spelling, its argument (None: a switch) and what it becomes."""

    flag: str
    meta: str | None
    doc: str


FLAGS = [
    DewyFlag("--max-backoff-interval", "SECONDS",
             "Dewy's spelling of poll-backoff-max, in whole seconds; 0 = no backoff (Dewy's default)."),
    DewyFlag("--calver", "FORMAT", "Read tags as calendar versions: adds ?calver=FORMAT to the registry URL."),
    DewyFlag("--no-rollback", None, "rollback = off: a release failing its readiness check stays and the old "
                                    "one retires (the failure is logged and notified)."),
    DewyFlag("--telemetry", None, "Serve Prometheus metrics: metrics = %s unless metrics is given." % ADMIN_METRICS),
    DewyFlag("--otlp-insecure", None, "otlp-insecure = true: OTLP in plaintext."),
]
BY_FLAG = {f.flag: f for f in FLAGS}


def options_block(width: int = 34) -> str:
    """The docopt `Dewy options:` block for server/assets."""
    lines = ["Dewy options:  (linyows/dewy's own flags, mapped onto the settings above)"]
    for f in FLAGS:
        spec = f.flag if f.meta is None else "%s %s" % (f.flag, f.meta)
        lines.append("  %-*s  %s" % (width, spec, f.doc))
    return "\n".join(lines) + "\n"


def _seconds(flag: str, text: str) -> int:
    """A whole number of seconds >= 0, as Dewy's int flags take."""
    if not text.isdigit():
        raise FlagError('command line: %s = "%s": expected whole seconds, e.g. 300 (Dewy\'s unit)' % (flag, text))
    return int(text)


def _conflict(flag: str, setting: str) -> FlagError:
    return FlagError("command line: %s and --%s both given: they set the same thing; give one" % (flag, setting))


def with_calver(registry: str, calver: str) -> str:
    """The registry URL with ?calver= set to calver (added to the query; the same value already there is fine)."""
    base, _, fragment = registry.partition("#") if not registry.startswith("file:") else (registry, "", "")
    head, sep, query = base.partition("?")
    pairs = [p for p in query.split("&") if p] if sep else []
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key == "calver":
            from urllib.parse import unquote

            if unquote(value) != calver:
                raise FlagError('command line: --calver = "%s" but --registry already says calver=%s; give one'
                                % (calver, unquote(value)))
            return registry
    pairs.append("calver=" + quote(calver, safe=""))
    return head + "?" + "&".join(pairs) + ("#" + fragment if fragment else "")


def translate(args: dict, values: dict) -> None:
    """Fold the Dewy flags of docopt's `args` into `values` (setting name -> raw value, as options_from_args
    builds it); FlagError when one is bad or collides with its setting."""
    if args.get("--max-backoff-interval") is not None:
        if values.get("poll-backoff-max") is not None:
            raise _conflict("--max-backoff-interval", "poll-backoff-max")
        # 0 = no backoff in Dewy; poll-backoff-max 0 means the same (polls stay at interval).
        values["poll-backoff-max"] = str(_seconds("--max-backoff-interval", args["--max-backoff-interval"]))
    if args.get("--calver") is not None and values.get("registry"):
        values["registry"] = with_calver(values["registry"], args["--calver"])
    if values.get("mode") == "server":
        # --health-path/--health-timeout are container mode's settings; on `dewy server` (Dewy's PR #490) they
        # are the readiness check: ready = http:PATH:TIMEOUT, 2xx and 3xx healthy.
        path, timeout = values.pop("health-path", None), values.pop("health-timeout", None)
        if path is not None:
            if values.get("ready") is not None:
                raise _conflict("--health-path", "ready")
            if not path.startswith("/"):
                path = "/" + path  # Dewy joins it after the port: `health` and `/health` ask the same
            seconds = HEALTH_TIMEOUT
            if timeout is not None:
                try:
                    seconds = parse_duration(timeout) or HEALTH_TIMEOUT  # 0: Dewy's default
                except ValueError:
                    raise FlagError('command line: --health-timeout = "%s": expected seconds, e.g. 30' % timeout) \
                        from None
            values["ready"] = "http:%s:%gs" % (path, seconds)
    if args.get("--no-rollback"):
        if values.get("rollback") is not None:
            raise _conflict("--no-rollback", "rollback")
        values["rollback"] = "off"
    if args.get("--telemetry") and values.get("metrics") is None:
        values["metrics"] = ADMIN_METRICS
    if args.get("--otlp-insecure"):
        if values.get("otlp-insecure") is not None:
            raise _conflict("--otlp-insecure", "otlp-insecure")
        values["otlp-insecure"] = "true"


def version_output(version: str, argv: list[str]) -> tuple[str, bool]:
    """(text, to_stderr) for -v: Dewy's line on stdout, or with `--log-format json` / `-f json` its JSON log
    record on stderr (slog's shape: time, level, msg, version, commit, date)."""
    spelled = " ".join(argv)
    if not any(form in spelled for form in ("--log-format json", "--log-format=json", "-f json", "-fjson")):
        return version_line(version), False
    import json

    from dewy.clock import utc_iso

    line = version_line(version)
    commit, _, date = line[line.index("[") + 1:-1].partition(", ")
    return json.dumps({"time": utc_iso(millis=True), "level": "INFO", "msg": "Dewy version", "version": version,
                       "commit": commit, "date": date}), True


def version_line(version: str) -> str:
    """`dewy version: X [commit, date]` as Dewy prints it (commit and date when the build recorded them)."""
    import dewy

    return "dewy version: %s [%s, %s]" % (version, getattr(dewy, "__commit__", "") or "unknown",
                                          getattr(dewy, "__date__", "") or "unknown")
