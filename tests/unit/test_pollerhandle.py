"""The master's bound on a silent poller follows what the poller says it does (its `state`), in-process: a
real PollerHandle on one end of a socketpair, a fake clock, a fake start and kill (no processes)."""

from __future__ import annotations

import signal
import socket

import pytest

from dewy.config import from_options
from dewy.master.pollerhandle import DEPLOY_TIMEOUT, DOWNLOAD_STALL, PollerHandle
from dewy.protocol import Channel


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wired():
    """(handle, the poller's end of the pipe, clock, kills)."""
    a, b = socket.socketpair()
    clock, kills = Clock(), []
    h = PollerHandle(clock, lambda argv, env, cwd, fds, creds=None: 4242, lambda pid, sig: kills.append((pid, sig)) or True)
    h.channel, h.pid = Channel(a), 4242
    h.call_timeout = 60.0
    theirs = Channel(b)
    yield h, theirs, clock, kills
    h.close()
    theirs.close()


CFG = from_options({"registry": "file:///nowhere", "app": ["app"], "interval": "10s", "hook-timeout": "5m"})


def say(h, theirs, type_, **fields) -> None:
    theirs.send(type_, **fields)
    assert [m["type"] for m in h.receive()] == [type_]


@pytest.mark.parametrize("state, reason, extra", [
    ("idle", "up-to-date", 0), ("polling", "interval", 0), ("paused", "paused", 0), ("held", "held", 0),
    ("waiting-wave", "rollout-wave", 0), ("deploying", "switching", 0),
    ("downloading", "download", DOWNLOAD_STALL), ("downloading", "cached", DOWNLOAD_STALL),
    ("deploying", "unpacking", DEPLOY_TIMEOUT),
    ("deploying", "before-hook", 300.0), ("deploying", "after-hook", 300.0),
])
def test_the_bound_follows_the_stated_state(wired, state, reason, extra):
    """~70 s (ping cadence + a poll's calls) whatever the registry offers, unless the poller says it runs a
    download, an unpack or a hook. Before, a paused or held host with a newer version published was allowed
    2 x hook-timeout + 30 min: a poller hung there was noticed after ~41 minutes."""
    h, theirs, clock, kills = wired
    # A newer version is published and not deployed (paused): that alone no longer widens the bound.
    say(h, theirs, "status", latest_version="1.1.0", state=state, reason=reason, target=None, held="1.1.0")
    assert h.stall_bound(CFG) == 10 + 60 + extra
    assert h.stated["state"] == state and h.stated["held"] == "1.1.0"


def test_a_state_message_between_polls_moves_the_bound_and_a_stuck_poller_says_why(wired):
    h, theirs, clock, kills = wired
    say(h, theirs, "status", latest_version="1.0.0", state="idle", reason="up-to-date")
    say(h, theirs, "state", state="deploying", reason="before-hook", target="1.1.0")
    assert h.stall_bound(CFG) == 10 + 60 + 300
    say(h, theirs, "state", state="deploying", reason="switching", target="1.1.0")
    assert h.stall_bound(CFG) == 70, "waiting for our answer it reads its pipe: the short bound"
    say(h, theirs, "state", state="deploying", reason="before-hook", target="1.2.0")

    def fire():
        for deadline, action in h.timers(CFG, None):
            if deadline <= clock.t:
                action(clock.t)
    clock.t += 10 + 60 + 300 - 1
    fire()
    assert kills == [], "within hook-timeout + a poll's calls: not stuck yet (pinged only)"
    clock.t += 1
    fire()
    assert kills == [(4242, signal.SIGKILL)]
    assert h.stated["state"] == "stuck" and "while deploying 1.2.0" in h.stated["reason_text"]
    h.exited()
    assert h.stated["state"] == "stuck", "shown until a new poller says what it does"
