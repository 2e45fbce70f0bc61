"""What the poller says it is doing: one state at a time, with a machine-readable reason.

The poller states it in every `status` message and, when it changes between two polls, in a `state`
message (dewy/protocol.py); the master bounds the poller's silence by it (dewy/master/pollerhandle.py),
shows it in the status file (`poller`) and `dewy deploy-now` follows it without reading prose.

States and their reason codes:

    idle          starting, up-to-date, nothing-deployable, not-yet-published, registry-failed,
                  deployed, deploy-failed (transient: retried), refused, unfinished (an artifact still
                  being copied into the registry: waited for, no failure)
    polling       interval, deploy-now, trigger, config, lost   (why this poll runs now)
    downloading   download, cached (checking the cached copy)
    deploying     unpacking, before-hook, switching (the master starts it; the poller answers pings),
                  after-hook, finishing (shipped_to record, prune, audit)
    waiting-wave  rollout-wave, cache-unavailable, cache-refused   (fleet rollouts: not this host's turn)
    paused        paused        (`dewy pause`; also when it came while a deploy ran: stopped before its switch)
    held          held          (after `dewy rollback`: only a version newer than the hold deploys)

`target` names the version downloaded or deployed, `held` the newest version kept back (paused, held,
waiting-wave). Standard library only.
"""

import time

from dewy.clock import utc_iso
from dewy.protocol import STATED

IDLE, POLLING, DOWNLOADING, DEPLOYING = "idle", "polling", "downloading", "deploying"
WAITING_WAVE, PAUSED, HELD = "waiting-wave", "paused", "held"
STATES = (IDLE, POLLING, DOWNLOADING, DEPLOYING, WAITING_WAVE, PAUSED, HELD)
# The reasons of a deploy under way during which the poller does not read its pipe for long (a download, an
# unpack, a hook): the master allows for them (DEPLOY_TIMEOUT, hook-timeout) before calling it stuck.
HOOK_REASONS = ("before-hook", "after-hook")
FIELDS = STATED + ("poll_request",)  # the `state` message's fields (dewy.protocol declares them)


class Stated:
    """The poller's current state; `fields()` is what goes into `status` / `state` messages."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.state, self.reason, self.reason_text = IDLE, "starting", None
        self.target = self.held = None
        self.since = utc_iso(clock())
        self.poll_request = None

    def set(self, state: str, reason: str, text: str | None = None, target: str | None = None,
            held: str | None = None, poll_request=None) -> bool:
        """Enter state for reason; True when that changes what is stated (`since` restarts only then)."""
        assert state in STATES, state
        new = (state, reason, text, target, held, poll_request)
        if new == (self.state, self.reason, self.reason_text, self.target, self.held, self.poll_request):
            return False
        if (state, target) != (self.state, self.target):
            self.since = utc_iso(self.clock())
        self.state, self.reason, self.reason_text, self.target, self.held, self.poll_request = new
        return True

    def fields(self) -> dict:
        """{state, reason, reason_text, target, held, since, poll_request}."""
        return {name: getattr(self, name) for name in FIELDS}
