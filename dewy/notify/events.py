"""The events dewy notifies about, declared once: what each is called, whether it is good or bad news,
whether `quiet=true` keeps it, and how its one-line text reads.

An event is a name plus fields. Every event carries `host`, `app` and `version` (None when nothing runs);
the others depend on the event (`previous_version`, `generation`, `switch_seconds`, `error`, `output`...).
"""

from dataclasses import dataclass, field

# kind: "error" counts towards error limiting, "success" ends a run of errors, "info" does neither.
ERROR, SUCCESS, INFO = "error", "success", "info"


@dataclass(frozen=True)
class Kind:
    """How one event name behaves."""

    severity: str   # ERROR, SUCCESS or INFO
    quiet: bool     # still sent by a notifier with quiet=true
    title: str      # headline, e.g. "deployed"


EVENTS = {
    "started": Kind(INFO, False, "dewy started"),
    "stopped": Kind(INFO, False, "dewy stopped"),
    "downloaded": Kind(INFO, False, "release downloaded"),
    "deployed": Kind(SUCCESS, True, "deployed"),
    "refused": Kind(ERROR, True, "release refused"),
    "failed": Kind(ERROR, True, "deploy failed"),
    "rolled-back": Kind(ERROR, True, "rolled back"),
    "hook-failed": Kind(ERROR, True, "hook failed"),
    "hook-succeeded": Kind(INFO, False, "hook succeeded"),  # Dewy sends hook results either way; quiet drops it
    "rollout-stopped": Kind(ERROR, True, "rollout stopped fleet-wide"),
    "registry-unreachable": Kind(ERROR, True, "registry unreachable"),
    "registry-reachable": Kind(SUCCESS, False, "registry reachable again"),
    # Sent by the error limiter itself (dewy.notify.limit), never by the poller.
    "suppressed": Kind(INFO, True, "further errors suppressed until recovery"),
}
# `rolled-back` with `operator: true`: the operator's own `dewy rollback`, which is no error (error limiting must
# keep its budget for crash loops), yet still news that quiet mode keeps.
OPERATOR_ROLLBACK = Kind(INFO, True, "rolled back by the operator")

OUTPUT_TAIL_LINES = 10  # of a failed hook's output, in its notification


@dataclass(frozen=True)
class Event:
    """One notification: a name from EVENTS and its fields (JSON-able); `text` is rendered from them."""

    name: str
    fields: dict = field(default_factory=dict)

    @property
    def kind(self) -> Kind:
        """How this event behaves (an unknown name behaves like info; an operator's rollback is info)."""
        if self.name == "rolled-back" and self.fields.get("operator"):
            return OPERATOR_ROLLBACK
        return EVENTS.get(self.name, Kind(INFO, False, self.name))

    @property
    def title(self) -> str:
        """`[app] deployed 1.2.3`: a short headline (mail subject, Slack fallback)."""
        version = self.fields.get("version")
        return "[%s] %s%s" % (self.fields.get("app") or "dewy", self.kind.title, " %s" % version if version else "")

    @property
    def text(self) -> str:
        """The message: one line (a failed hook adds the tail of its output)."""
        render = _TEXTS.get(self.name)
        f = _Defaults(self.fields)
        text = render(f) if render else "%s on %s" % (self.name, f["host"])
        if self.fields.get("suppressed"):
            n = self.fields["suppressed"]
            text += " (%d error notification%s suppressed meanwhile)" % (n, "" if n == 1 else "s")
        return text

    def replace(self, **fields) -> "Event":
        """This event with some fields changed."""
        return Event(self.name, dict(self.fields, **fields))

    def to_json(self) -> dict:
        """What a webhook receives: event, title, text and every field."""
        return dict(self.fields, event=self.name, title=self.title, text=self.text)


class _Defaults(dict):
    """Fields as the text templates read them: host/app/version always present."""

    def __missing__(self, key):
        return {"host": "?", "app": "dewy"}.get(key)


def tail(output: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    """The last `lines` non-empty-ended lines of a hook's output."""
    return "\n".join((output or "").rstrip().splitlines()[-lines:])


def _seconds(value) -> str:
    return "%.1fs" % value if isinstance(value, (int, float)) else "?"


def _mib(value) -> str:
    from dewy.poller.progress import size_text  # KiB or bytes for a small artifact, not "0.0 MiB"

    return size_text(value)


# The text of each event from its fields; `{app}`, `{host}` and `{version}` are always there.
_TEXTS = {
    "started": lambda f: "dewy started on %s: %s running %s" % (f["host"], f["app"], f["version"] or "nothing yet"),
    "stopped": lambda f: "dewy stopped on %s (%s): %s was running %s" % (
        f["host"], f.get("reason") or "stop requested", f["app"], f["version"] or "nothing"),
    "downloaded": lambda f: "%s %s downloaded on %s: %s in %s" % (
        f["app"], f["version"], f["host"], _mib(f.get("bytes")), _seconds(f.get("seconds"))),
    "deployed": lambda f: "%s deployed on %s: %s -> %s (%sthe switch took %s)%s" % (
        f["app"], f["host"], f.get("previous_version") or "nothing", f["version"],
        # assets mode runs no app: no generation to name
        "generation %s, " % f["generation"] if f.get("generation") else "",
        _seconds(f.get("switch_seconds")), "; " + f["error"] if f.get("error") else ""),
    "refused": lambda f: "%s %s refused on %s: %s" % (f["app"], f["version"], f["host"], f.get("error")),
    "failed": lambda f: "%s: deploy of %s failed on %s: %s (%s)" % (
        f["app"], f["version"], f["host"], f.get("error"),
        "it serves anyway" if f.get("kept") else "version refused" if f.get("refused") else "will retry"),
    "rolled-back": lambda f: "%s rolled back on %s: %s -> %s: %s" % (
        f["app"], f["host"], f["version"], f.get("to_version") or "nothing", f.get("error")),
    "hook-failed": lambda f: "%s: %s failed on %s for %s: %s%s" % (
        f["app"], f.get("hook") or "hook", f["host"], f["version"], f.get("error"),
        "\n" + f["output"] if f.get("output") else ""),
    "hook-succeeded": lambda f: "%s: %s succeeded on %s for %s in %s%s" % (
        f["app"], f.get("hook") or "hook", f["host"], f["version"], _seconds(f.get("seconds")),
        "\n" + f["output"] if f.get("output") else ""),
    "rollout-stopped": lambda f: "%s %s stopped fleet-wide: it failed on %s: %s (hosts that have not deployed it "
                                 "never will; hosts running it go back)" % (
        f["app"], f["version"], f["host"], f.get("error")),
    "registry-unreachable": lambda f: "%s: the registry is unreachable from %s: %s" % (
        f["app"], f["host"], f.get("error")),
    "registry-reachable": lambda f: "%s: the registry answers %s again (after %s failed poll%s)" % (
        f["app"], f["host"], f.get("failed_polls"), "" if f.get("failed_polls") == 1 else "s"),
    "suppressed": lambda f: "%s: %s errors in a row on %s; further errors suppressed until recovery. Latest: %s" % (
        f["app"], f.get("errors_in_a_row"), f["host"], f.get("latest")),
}


def make(name: str, host: str, app: str, version: str | None, **fields) -> Event:
    """The event `name` with its standard fields (a hook's output cut to its tail)."""
    f = dict(fields, host=host, app=app, version=version)
    if f.get("output"):
        f["output"] = tail(f["output"])
    return Event(name, f)
