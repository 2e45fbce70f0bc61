"""The one way the master's timers run: a table of [(deadline, action(now))], rebuilt from state each time.

The lifecycle, the poller handle, the probes, the control clients and the watchdog each list their
deadlines; the Arbiter's loop sleeps until next_deadline() of their union and fire()s what is due; the
unit tests drive a Lifecycle alone with the very same two functions and a fake clock.
"""


def next_deadline(table: list) -> float | None:
    """The earliest deadline in the table, or None."""
    return min((deadline for deadline, _ in table), default=None)


def fire(table: list, now: float) -> None:
    """Run the action of every deadline that has passed by now."""
    for deadline, action in table:
        if now >= deadline:
            action(now)
