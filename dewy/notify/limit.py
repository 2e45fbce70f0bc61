"""Error limiting and quiet mode: what one notifier actually gets to send.

A failure storm (a registry flapping, one bad release after another) must not flood a channel:
after LIMIT error notifications in a row, the next error becomes one "further errors suppressed until
recovery" notice and the ones after it are dropped; the next success (a deploy, the registry answering
again) goes out saying how many were suppressed, and the count starts over.
"""

from dewy.notify.events import ERROR, SUCCESS, Event

LIMIT = 3  # error notifications in a row that are sent before the limiter steps in


class Filter:
    """Per-notifier gate: quiet mode first, then the error limiter."""

    def __init__(self, quiet: bool = False, limit: int = LIMIT):
        self.quiet = quiet
        self.limit = limit
        self.errors = 0      # error notifications in a row (sent or not)
        self.suppressed = 0  # of those, how many were not sent

    def admit(self, event: Event) -> Event | None:
        """The event to send instead of `event` (itself, the suppression notice, or a success that reports
        the suppressed count), or None to send nothing."""
        kind = event.kind
        if self.quiet and not kind.quiet:
            return None
        if kind.severity == ERROR:
            self.errors += 1
            if self.errors <= self.limit:
                return event
            self.suppressed += 1
            if self.errors == self.limit + 1:
                return Event("suppressed", dict(event.fields, latest=event.text, latest_event=event.name,
                                                errors_in_a_row=self.errors))
            return None
        if kind.severity == SUCCESS and self.errors:
            suppressed, self.errors, self.suppressed = self.suppressed, 0, 0
            if suppressed:
                return event.replace(suppressed=suppressed)
        return event

