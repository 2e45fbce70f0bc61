"""The master's generation lifecycle and poller handle, in-process: a fake clock and a fake spawn, no processes.

Like gunicorn's tests/test_arbiter.py: the decisions (deploy, readiness, probation, rollback, backoff,
pending commands, stop) are driven step by step; only the `current` symlink and the manifest are real
files in tmp_path. Each test runs in milliseconds.
"""

from __future__ import annotations

import os
import signal
import socket

import pytest

from dewy.protocol import Deploy
from dewy import releases
from dewy.config import from_options
from dewy.master import upgrade
from dewy.master.arbiter import ErrorBudget
from dewy.master.generation import RETIRING, SERVING, STARTING, command_problem
from dewy.master.lifecycle import BACKOFF_MAX, PROBATION, PROBATION_DEATHS, CommandError, Host, Lifecycle
from dewy.master.pollerhandle import PollerHandle


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class FakeHost(Host):
    """Records what the lifecycle asks for; 'processes' are numbers in a set."""

    def __init__(self):
        self.next_pid = 50000
        self.running = set()
        self.spawned = []
        self.signals = []
        self.messages = []
        self.readies = 0
        self.changes = 0
        self.upgrades = 0
        self.fail = None  # an exception spawn() raises
        self.listeners_held = set()  # pids whose group still holds a listening socket

    def spawn(self, gen) -> int:
        if self.fail:
            raise self.fail
        self.next_pid += 1
        self.running.add(self.next_pid)
        self.spawned.append(gen)
        return self.next_pid

    def signal(self, pid, sig) -> bool:
        self.signals.append((pid, sig))
        return pid in self.running

    def group_alive(self, pid) -> bool:
        return pid in self.running

    def listening(self, pid) -> bool:
        return pid in self.listeners_held

    def tell_poller(self, type_, **fields):
        self.messages.append((type_, fields))

    def ready(self):
        self.readies += 1

    def changed(self):
        self.changes += 1

    def upgrade(self):
        self.upgrades += 1

    def sent(self, type_) -> list:
        return [f for t, f in self.messages if t == type_]


def exited(code: int) -> int:
    """A wait status for a process that exited with code."""
    return code << 8


@pytest.fixture
def world(tmp_path):
    """(lifecycle, host, clock, make_release) in a workdir under tmp_path."""
    def make(**settings):
        options = {"registry": "file:///nowhere", "app": ["app"], "workdir": str(tmp_path),
                   "ready": "delay:1s", "graceful-timeout": "10s"}
        options.update(settings)
        cfg = from_options(options)
        host, clock = FakeHost(), Clock()
        return Lifecycle(cfg, host, clock), host, clock
    return make


def release(tmp_path, version: str) -> str:
    """An unpacked release dir for version, recorded in the manifest."""
    path = tmp_path / "releases" / version
    path.mkdir(parents=True)
    releases.Manifest(str(tmp_path)).record(str(path), version, "v" + version, "app.tar.gz", None)
    return str(path)


def current(lc) -> str | None:
    return releases.read_link(lc.current_link)


def die(lc, host, gen, code: int = 1) -> None:
    """The generation's process exits (and is reaped)."""
    host.running.discard(gen.pid)
    assert lc.child_exited(gen.pid, exited(code))


def fire_next(lc, clock) -> None:
    """Move the clock to the next deadline and fire it."""
    deadline = lc.next_deadline()
    assert deadline is not None, "nothing is scheduled"
    clock.t = max(clock.t, deadline)
    lc.fire(clock.t)


def fire_until(lc, clock, done, limit: int = 20) -> None:
    """Fire deadlines one by one until done() holds."""
    for _ in range(limit):
        if done():
            return
        fire_next(lc, clock)
    raise AssertionError("still not done after %d deadlines" % limit)


def serving_version(lc, host, clock, tmp_path, version: str = "1.0.0"):
    """Deploy version onto an idle lifecycle and make it ready; returns its release dir."""
    path = release(tmp_path, version)
    lc.deploy(Deploy(version=version, release_dir=path))
    fire_next(lc, clock)
    assert lc.serving is not None and lc.serving.version == version
    return path


# --------------------------------------------------------------------------- deploys
def test_deploy_becomes_ready_and_retires_the_old_generation(world, tmp_path):
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    old = lc.serving
    v2 = release(tmp_path, "1.1.0")
    lc.deploy(Deploy(version="1.1.0", release_dir=v2))
    new = lc.starting
    assert new.state == STARTING and current(lc) == v2
    assert lc.deploying == {"version": "1.1.0", "release_dir": v2, "previous_dir": v1}
    assert lc.state_name() == "deploying"
    clock.advance(0.5)
    lc.fire(clock.t)
    assert lc.starting is new, "not ready before its delay"
    clock.advance(0.5)
    lc.fire(clock.t)
    assert lc.serving is new and new.state == SERVING and lc.starting is None
    assert old.state == RETIRING and (old.pid, signal.SIGTERM) in host.signals
    assert old.kill_deadline == clock.t + 10
    assert host.sent("deployed")[-1] == {"version": "1.1.0", "ok": True, "error": None,
                                         "generation": new.number, "release_dir": v2}
    assert lc.current_version == "1.1.0" and lc.deploying is None
    assert lc.probation.previous_dir == v1


def test_old_generation_is_killed_after_graceful_timeout_and_swept(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    old = lc.serving
    lc.restart()
    fire_next(lc, clock)  # ready
    assert old in lc.retiring
    fire_next(lc, clock)  # graceful-timeout of the old one
    assert (old.pid, signal.SIGKILL) in host.signals
    host.running.discard(old.pid)
    assert lc.child_exited(old.pid, signal.SIGKILL)
    assert lc.sweep() and lc.retiring == []


def test_notify_generation_that_never_sends_ready_is_refused(world, tmp_path):
    lc, host, clock = world(ready="notify:5s")
    v1 = release(tmp_path, "1.0.0")
    lc.deploy(Deploy(version="1.0.0", release_dir=v1))
    lc.notify_ready(lc.starting.pid, lambda pid, pgid: False)
    v2 = release(tmp_path, "1.1.0")
    lc.deploy(Deploy(version="1.1.0", release_dir=v2))
    bad = lc.starting
    lc.notify_ready(12345, lambda pid, pgid: False)  # someone else's READY=1
    assert lc.starting is bad
    clock.advance(5)
    lc.fire(clock.t)
    answer = host.sent("deployed")[-1]
    assert answer["ok"] is False and "did not send READY=1 within 5s" in answer["error"]
    assert "retry" not in answer, "a release that does not become ready is the release's fault"
    assert current(lc) == v1 and lc.serving.version == "1.0.0"
    assert bad.state == RETIRING and (bad.pid, signal.SIGTERM) in host.signals


def test_ready_from_a_process_in_the_generations_group(world, tmp_path):
    lc, host, clock = world(ready="notify:5s")
    path = release(tmp_path, "1.0.0")
    lc.deploy(Deploy(version="1.0.0", release_dir=path))
    gen = lc.starting
    lc.notify_ready(777, lambda pid, pgid: pid == 777 and pgid == gen.pid)
    assert lc.serving is gen


def test_generation_dying_before_ready_fails_the_deploy(world, tmp_path):
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0")))
    die(lc, host, lc.starting, 3)
    answer = host.sent("deployed")[-1]
    assert answer["ok"] is False and "exited with code 3 before it was ready" in answer["error"]
    assert current(lc) == v1 and lc.serving.version == "1.0.0" and lc.respawn_at is None


def test_uncommandable_app_is_a_config_error_not_a_refusal(world, tmp_path):
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    host.fail = CommandError("cannot execute nosuchcmd: no such file (looked in PATH)")
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0")))
    answer = host.sent("deployed")[-1]
    assert answer["ok"] is False and answer["retry"] is True and "nosuchcmd" in answer["error"]
    assert "nosuchcmd" in lc.problem and "`app` setting" in lc.problem
    assert current(lc) == v1 and lc.serving.version == "1.0.0"
    host.fail = None
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0b")))
    fire_next(lc, clock)
    assert lc.serving.version == "1.1.0" and lc.problem is None


def test_missing_release_dir_is_retried_not_refused(world, tmp_path):
    lc, host, clock = world()
    lc.deploy(Deploy(version="1.0.0", release_dir=str(tmp_path / "releases" / "gone")))
    answer = host.sent("deployed")[-1]
    assert answer["ok"] is False and answer["retry"] is True and host.spawned == []


# ------------------------------------------------------------------ crashes and rollback
def test_crash_loop_during_probation_rolls_back(world, tmp_path):
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    v2 = serving_version(lc, host, clock, tmp_path, "1.1.0")
    assert lc.probation and lc.probation.until == clock.t + PROBATION
    for death in range(1, PROBATION_DEATHS):
        die(lc, host, lc.serving)
        assert lc.probation.deaths == death and lc.respawn_at is not None
        fire_next(lc, clock)  # respawn
        assert lc.starting.reason == "respawn" and lc.starting.release_dir == v2
        fire_next(lc, clock)  # ready
    die(lc, host, lc.serving)
    assert host.sent("rollback") == [{"version": "1.1.0", "to_version": "1.0.0", "error": (
        "version 1.1.0 crashed 3 times after its deploy; rolled back to 1.0.0")}]
    assert current(lc) == v1 and lc.current_version == "1.0.0" and lc.probation is None
    assert lc.starting.reason == "rollback" and lc.starting.release_dir == v1
    assert lc.last_deploy["rolled_back_to"] == "1.0.0"


def test_deaths_after_probation_are_respawned_not_rolled_back(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    serving_version(lc, host, clock, tmp_path, "1.1.0")
    clock.advance(PROBATION + 1)
    for _ in range(PROBATION_DEATHS + 1):
        die(lc, host, lc.serving)
        fire_until(lc, clock, lambda: lc.serving)
    assert host.sent("rollback") == [] and lc.serving.version == "1.1.0"


def test_respawn_backoff_doubles_to_the_maximum_and_resets_when_stable(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    clock.advance(PROBATION + 1)
    delays = []
    for _ in range(8):
        die(lc, host, lc.serving)
        delays.append(lc.respawn_at - clock.t)
        fire_next(lc, clock)  # respawn
        fire_next(lc, clock)  # ready after 1s, dies at once
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX, BACKOFF_MAX]
    clock.advance(10)  # up for STABLE_AFTER: the next death starts over
    die(lc, host, lc.serving)
    assert lc.respawn_at - clock.t == 0.5


def test_generation_dying_at_start_is_respawned_with_backoff(world, tmp_path):
    lc, host, clock = world()
    path = release(tmp_path, "1.0.0")
    releases.switch_link(lc.current_link, path)
    lc.cold_start(None)
    delays = []
    for _ in range(3):
        die(lc, host, lc.starting, 1)
        delays.append(lc.respawn_at - clock.t)
        fire_next(lc, clock)
    assert delays == [0.5, 1.0, 2.0] and lc.starting.reason == "respawn"


# ------------------------------------------------------------------ pending work and stop
def test_restart_and_upgrade_during_a_deploy_wait_until_it_settles(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0")))
    deploying = lc.starting
    lc.restart()
    assert lc.request_upgrade() is False
    assert lc.starting is deploying and host.upgrades == 0
    fire_next(lc, clock)  # the deploy is ready
    assert host.upgrades == 1, "the upgrade runs once the deploy settled"
    assert lc.starting is not None and lc.starting.reason == "restart" and lc.starting.version == "1.1.0"


def test_deploy_during_a_deploy_is_queued(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0")))
    v3 = release(tmp_path, "1.2.0")
    lc.deploy(Deploy(version="1.2.0", release_dir=v3))
    assert lc.starting.version == "1.1.0"
    fire_next(lc, clock)
    assert lc.starting.version == "1.2.0" and current(lc) == v3
    fire_next(lc, clock)
    assert [a["version"] for a in host.sent("deployed")] == ["1.0.0", "1.1.0", "1.2.0"]


def test_stop_during_a_deploy_leaves_current_on_what_served(world, tmp_path):
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0")))
    starting, serving = lc.starting, lc.serving
    lc.stop(graceful=True)
    assert current(lc) == v1, "a stop must leave current on the release that last served"
    assert lc.deploying is None and lc.deploying is None
    assert starting.state == serving.state == RETIRING and lc.state_name() == "stopping"
    assert {(starting.pid, signal.SIGTERM), (serving.pid, signal.SIGTERM)} <= set(host.signals)
    assert len(host.sent("deployed")) == 1, "no answer for the abandoned deploy (the poller is stopping)"
    fire_next(lc, clock)  # graceful-timeout
    assert {(starting.pid, signal.SIGKILL), (serving.pid, signal.SIGKILL)} <= set(host.signals)
    for gen in (starting, serving):
        die(lc, host, gen)
    lc.sweep()
    assert lc.all_gone()
    lc.deploy(Deploy(version="1.2.0", release_dir=release(tmp_path, "1.2.0")))
    assert lc.starting is None, "nothing starts while stopping"


def test_cold_start_goes_back_from_an_interrupted_deploy(world, tmp_path):
    lc, host, clock = world()
    v1, v2 = release(tmp_path, "1.0.0"), release(tmp_path, "1.1.0")
    releases.switch_link(lc.current_link, v2)  # the master was killed while 1.1.0 was starting
    lc.cold_start({"deploying": {"version": "1.1.0", "release_dir": v2, "previous_dir": v1}})
    assert current(lc) == v1 and lc.starting.release_dir == v1 and lc.current_version == "1.0.0"


def test_cold_start_trusts_current_when_no_deploy_was_interrupted(world, tmp_path):
    lc, host, clock = world()
    v2 = release(tmp_path, "1.1.0")
    releases.switch_link(lc.current_link, v2)
    lc.cold_start({"deploying": None, "release_dir": v2})
    assert lc.starting.release_dir == v2 and lc.starting.reason == "initial"


# ------------------------------------------------------------------ a lost release directory
def test_deleted_release_dir_is_reported_and_the_poller_asked_to_redeploy(world, tmp_path):
    lc, host, clock = world()
    path = serving_version(lc, host, clock, tmp_path)
    clock.advance(PROBATION + 1)
    os.rename(path, path + ".deleted")
    lc.restart()  # USR1: the running app keeps serving
    assert host.sent("lost") == [{"version": "1.0.0", "release_dir": path, "error": lc.problem}]
    assert "is gone" in lc.problem and lc.serving is not None and lc.starting is None
    die(lc, host, lc.serving)
    fire_next(lc, clock)  # the respawn finds nothing to run
    assert lc.starting is None and lc.current_release is None
    assert len(host.sent("lost")) == 2 and lc.next_deadline() is None


def test_a_deleted_release_dir_is_noticed_at_the_next_poll_while_the_app_serves(world, tmp_path):
    lc, host, clock = world()
    path = serving_version(lc, host, clock, tmp_path)
    lc.links.check_current()
    assert host.sent("lost") == []  # all is well: nothing said
    os.rename(path, path + ".deleted")
    lc.links.check_current()
    lc.links.check_current()  # said once, not at every poll
    assert [m["release_dir"] for m in host.sent("lost")] == [path]
    assert "is gone" in lc.problem and lc.serving is not None  # the running app is left alone


def test_lifecycle_state_survives_an_upgrade(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    serving_version(lc, host, clock, tmp_path, "1.1.0")
    lc.deploy(Deploy(version="1.2.0", release_dir=release(tmp_path, "1.2.0")))
    state = upgrade.UpgradeState(listeners=[["127.0.0.1:1", 5]], notify=["/x", 6], orphans={}, info={},
                                 started_at="t", systemd=[None, 0], **lc.to_state())
    state = upgrade.UpgradeState.from_json(state.to_json())
    lc2, host2, clock2 = world()
    clock2.t = clock.t + 500  # another clock: only relative times travel
    lc2.adopt(state)
    assert [g.pid for g in lc2.generations()] == [g.pid for g in lc.generations()]
    assert lc2.starting.ready_deadline - clock2.t == pytest.approx(lc.starting.ready_deadline - clock.t)
    assert lc2.probation.deaths == 0 and lc2.deploying == lc.deploying
    assert (lc2.current_version, lc2.generation_count) == ("1.1.0", lc.generation_count)


def test_upgrade_state_of_another_version_is_refused():
    with pytest.raises(ValueError, match="unsupported upgrade state version 99"):
        upgrade.UpgradeState.from_json('{"v": 99}')
    with pytest.raises(ValueError, match="incomplete"):
        upgrade.UpgradeState.from_json('{"v": %d, "listeners": []}' % upgrade.STATE_VERSION)


def test_timer_table_is_the_one_source_of_deadlines(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    lc.restart()
    deadlines = sorted(d for d, _ in lc.timers())
    assert lc.next_deadline() == deadlines[0] == clock.t + 1.0
    lc.fire(clock.t + 0.999)
    assert lc.starting is not None, "fire() acts only on deadlines that passed"


# ------------------------------------------------------------------ app command check
def test_command_problem_names_the_command(tmp_path):
    assert command_problem(["sh", "-c", "true"], os.environ.get("PATH"), str(tmp_path)) is None
    assert "nosuchcmd: no such file (looked in PATH)" in command_problem(["nosuchcmd"], "/usr/bin:/bin", str(tmp_path))
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    assert "run.sh: it is not executable" in command_problem(["./run.sh"], None, str(tmp_path))
    script.chmod(0o755)
    assert command_problem(["./run.sh"], None, str(tmp_path)) is None


# ------------------------------------------------------------------ the poller handle
class FakeStart:
    """Stands in for fork_exec: records starts and returns made-up pids."""

    def __init__(self):
        self.pids, self.fail = [], None

    def __call__(self, argv, env, cwd, pass_fds, creds=None) -> int:
        if self.fail:
            raise self.fail
        self.pids.append(60000 + len(self.pids))
        return self.pids[-1]


@pytest.fixture
def handle():
    clock, start, kills = Clock(), FakeStart(), []
    h = PollerHandle(clock, start, lambda pid, sig: kills.append((pid, sig)) or True)
    yield h, clock, start, kills
    h.close()


def test_poller_restart_backoff(handle):
    h, clock, start, kills = handle
    cfg = from_options({"registry": "file:///nowhere", "app": ["app"]})
    delays = []
    for _ in range(4):
        assert h.spawn("/", {})
        h.exited()
        h.schedule_respawn()
        delays.append(h.respawn_at - clock.t)
        clock.t = h.respawn_at
    assert delays == [0.5, 1.0, 2.0, 4.0]
    h.spawn("/", {})
    clock.advance(61)  # a poller that lived a minute: its death starts the backoff over
    h.exited()
    h.schedule_respawn()
    assert h.respawn_at - clock.t == 0.5
    respawned = []
    [action(clock.t) for d, action in h.timers(cfg, lambda: respawned.append(1)) if d <= clock.t + 0.5]
    assert respawned == [1]
    start.fail = OSError("no fork")
    assert h.spawn("/", {}) is False and h.respawn_at is not None


def test_silent_poller_is_pinged_then_killed_as_wedged(handle):
    h, clock, start, kills = handle
    cfg = from_options({"registry": "file:///nowhere", "app": ["app"], "interval": "2s"})
    h.spawn("/", {})
    h.call_timeout = 5.0
    table = dict((round(d - clock.t, 3), a) for d, a in h.timers(cfg, None))
    assert sorted(table) == [2.0, 7.0], "ping after interval, wedged after interval + call timeout"
    clock.advance(7)
    for deadline, action in h.timers(cfg, None):
        if deadline <= clock.t:
            action(clock.t)
    assert kills == [(h.pid, signal.SIGKILL)] and h.ping_sent


def test_error_budget_ends_only_a_tight_loop():
    clock = Clock()
    budget = ErrorBudget(clock, burst=3, window=10)
    assert not budget.spend() and not budget.spend()
    clock.advance(11)
    assert not budget.spend(), "errors spread out never exhaust it"
    assert not budget.spend()
    assert budget.spend(), "three within 10s do"
    assert budget.count == 5


def test_rollback_target_deleted_asks_the_poller_to_redeploy_it(world, tmp_path):
    lc, host, clock = world()
    v1 = serving_version(lc, host, clock, tmp_path)
    v2 = serving_version(lc, host, clock, tmp_path, "1.1.0")
    os.rename(v1, v1 + ".deleted")
    for _ in range(PROBATION_DEATHS - 1):
        die(lc, host, lc.serving)
        fire_until(lc, clock, lambda: lc.serving)
    die(lc, host, lc.serving)
    assert host.sent("rollback")[0]["version"] == "1.1.0", "the crash-looping version is refused"
    assert host.sent("lost") == [{"version": "1.0.0", "release_dir": v1, "error": lc.problem}]
    assert current(lc) == v2 and lc.respawn_at is not None, "1.1.0 is respawned until a redeploy arrives"


# ------------------------------------------------------------------ the poller's side of the pipe
def test_poller_answers_ping_forgets_a_lost_release_and_retries_a_config_error():
    from dewy.poller.deploy import Transient
    from dewy.poller.worker import Poller
    from dewy.protocol import Channel
    ours, theirs = socket.socketpair()
    ours.settimeout(2)  # no pong: the test fails instead of hanging
    master, poller = Channel(ours), Poller(Channel(theirs))
    try:
        poller.handle({"type": "ping"})
        assert [m["type"] for m in master.receive()] == ["pong"]
        poller.current_version, poller.current_dir, poller.next_poll = "1.0.0", "/gone", float("inf")
        poller.handle({"type": "lost", "version": "1.0.0", "release_dir": "/gone", "error": "is gone"})
        assert poller.current_version is None and poller.current_dir is None
        assert poller.next_poll != float("inf"), "a lost release is deployed again at the next poll, now"
        master.send("deployed", version="1.1.0", ok=False, error="cannot execute nosuchcmd", retry=True)
        with pytest.raises(Transient, match="nosuchcmd"):
            poller.ask_master(version="1.1.0", release_dir="/r")
    finally:
        master.close()
        poller.channel.close()


def test_a_deploy_is_reported_only_once_the_old_generation_holds_no_listener(world, tmp_path):
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    old = lc.serving
    host.listeners_held.add(old.pid)  # it got its stop signal but still accepts
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0")))
    new = lc.starting
    fire_next(lc, clock)  # ready
    assert lc.serving is new and old.state == RETIRING and (old.pid, signal.SIGTERM) in host.signals
    assert [d["version"] for d in host.sent("deployed")] == ["1.0.0"], "1.1.0 does not serve alone yet"
    assert lc.state_name() == "deploying" and lc.last_deploy["version"] == "1.0.0"
    lc.restart()
    lc.deploy(Deploy(version="1.2.0", release_dir=release(tmp_path, "1.2.0")))
    assert lc.starting is None and lc.restart_pending and lc.pending_deploy, "both wait for the handover"
    fire_next(lc, clock)
    fire_next(lc, clock)
    assert [d["version"] for d in host.sent("deployed")] == ["1.0.0"]
    host.listeners_held.discard(old.pid)  # closed its listeners
    fire_next(lc, clock)
    assert [d["version"] for d in host.sent("deployed")] == ["1.0.0", "1.1.0"]
    assert lc.last_deploy["version"] == "1.1.0" and lc.starting.version == "1.2.0", "the queued deploy goes on"


def test_an_upgrade_waiting_for_a_handover_runs_from_the_timers_not_while_reaping(world, tmp_path):
    """The old generation exits during the handover: what waited (here USR2) runs at the next timer pass, never
    inside child_exited (the master would exec mid-reap and hand over a generation it reaped as alive)."""
    lc, host, clock = world()
    serving_version(lc, host, clock, tmp_path)
    old = lc.serving
    host.listeners_held.add(old.pid)
    lc.deploy(Deploy(version="1.1.0", release_dir=release(tmp_path, "1.1.0")))
    fire_next(lc, clock)  # ready; the handover waits
    assert lc.request_upgrade() is False and host.upgrades == 0
    host.listeners_held.discard(old.pid)
    die(lc, host, old, 0)
    assert host.upgrades == 0 and lc.next_deadline() == clock.t, "looked at from the timer table, at once"
    lc.fire(clock.t)
    assert host.upgrades == 1 and lc.last_deploy["version"] == "1.1.0"
