"""Every switch of `current` is crash-safe: the status file names it, durably, before the link moves.

Driven in-process with a real Arbiter (its status file, its control commands, its lifecycle) whose only
fakes are the fork and the signals: the app "processes" are numbers. os.replace and os.fsync are watched
to see the order in which the files reach the disk; a second Lifecycle then cold-starts from what a
master SIGKILLed at the app's fork would have left behind.
"""

from __future__ import annotations

import os

import pytest

from dewy.protocol import Deploy
from dewy import current as current_mod, releases, statefiles as status
from dewy.config import from_options
from dewy.master.apps import AppHost
from dewy.master.arbiter import Arbiter
from dewy.master.lifecycle import PROBATION_DEATHS, Lifecycle

from .test_lifecycle import Clock, FakeHost, exited


class ForkRecorder(AppHost):
    """The real Arbiter's Host, except that it only pretends to fork: at each fork it notes where `current`
    points and what the status file on disk says then, which is what a master killed at that moment leaves
    to the next one. Its app "processes" are numbers; none holds a listener."""

    def __init__(self, shell):
        super().__init__(shell)
        self.events = []
        self.at_fork = []
        self.next_pid = 60000
        self.running = set()
        self.signals = []

    def spawn(self, gen) -> int:
        link = os.path.join(self.shell.cfg.workdir, "current")
        self.events.append(("fork", gen.release_dir))
        self.at_fork.append((current_mod.read_link(link), status.read(self.shell.cfg.workdir)))
        self.next_pid += 1
        self.running.add(self.next_pid)
        return self.next_pid

    def signal(self, pid, sig) -> bool:
        self.signals.append((pid, sig))
        return pid in self.running

    def group_alive(self, pid) -> bool:
        return pid in self.running

    def listening(self, pid) -> bool:
        return False


def make_arbiter(cfg):
    """A real Arbiter (not started: no sockets, no signals, no poller) on a ForkRecorder, with a fake clock."""
    arb = Arbiter(cfg, reload_config=None, host=ForkRecorder)
    arb.lifecycle.clock = Clock()
    return arb


@pytest.fixture
def arbiter(tmp_path, monkeypatch):
    """(arbiter, events): events lists ("fsync", path) / ("rename", destination) / ("fork", release_dir)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("rename", os.fspath(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    cfg = from_options({"registry": "file:///nowhere", "app": ["app"], "workdir": str(tmp_path),
                        "ready": "notify:5s", "graceful-timeout": "10s"})
    arb = make_arbiter(cfg)
    arb.host.events = events
    yield arb, events
    arb.selector.close()


def release(tmp_path, version: str) -> str:
    path = tmp_path / "releases" / ("20261126T0650%02dZ" % int(version.split(".")[1]))
    path.mkdir(parents=True)
    releases.Manifest(str(tmp_path)).record(str(path), version, "v" + version, "app.tar.gz", None)
    return str(path)


def make_ready(arb) -> None:
    gen = arb.lifecycle.starting
    arb.lifecycle.notify_ready(gen.pid, lambda pid, group: False)
    assert arb.lifecycle.serving is gen


def serve(arb, tmp_path, version: str) -> str:
    path = release(tmp_path, version)
    arb.lifecycle.deploy(Deploy(version=version, release_dir=path))
    make_ready(arb)
    return path


def assert_recorded_before_the_link_moved(events, release_dir: str) -> None:
    """The status file was written (fsync'd, renamed, its directory fsync'd) before `current` was renamed to
    point at release_dir, and the app was forked only after that."""
    status_file = status.status_path(os.path.dirname(os.path.dirname(release_dir)))
    link = os.path.join(os.path.dirname(os.path.dirname(release_dir)), "current")
    fork = events.index(("fork", release_dir))
    moved = max(i for i, e in enumerate(events[:fork]) if e == ("rename", link))
    renamed = [i for i, e in enumerate(events[:moved]) if e == ("rename", status_file)]
    assert renamed, "status.json was not written before current moved: %r" % events
    last = renamed[-1]
    assert any(kind == "fsync" and os.path.basename(path).startswith(".status.json")
               for kind, path in events[:last]), "the status file's data was not fsync'd before its rename"
    assert ("fsync", os.path.dirname(status_file)) in events[last:moved], \
        "the state directory was not fsync'd after the status file's rename, before current moved"


def cold_start_after_a_kill(arb, at_fork) -> Lifecycle:
    """What the next master does with what a master killed at that fork left on disk."""
    link, on_disk = at_fork
    os.unlink(arb.lifecycle.current_link)
    os.symlink(os.path.relpath(link, arb.cfg.workdir), arb.lifecycle.current_link)
    lc = Lifecycle(arb.cfg, FakeHost(), Clock())
    lc.cold_start(on_disk)
    return lc


def test_a_deploy_names_itself_durably_before_current_moves(arbiter, tmp_path):
    arb, events = arbiter
    v1 = serve(arb, tmp_path, "1.0.0")
    v2 = release(tmp_path, "1.1.0")
    arb.lifecycle.deploy(Deploy(version="1.1.0", release_dir=v2))
    link, on_disk = arb.host.at_fork[-1]
    assert link == v2, "the app runs from current"
    assert on_disk["deploying"] == {"version": "1.1.0", "release_dir": v2, "previous_dir": v1}
    assert_recorded_before_the_link_moved(events, v2)
    lc = cold_start_after_a_kill(arb, arb.host.at_fork[-1])
    assert releases.read_link(lc.current_link) == v1 and lc.starting.release_dir == v1, \
        "a release that never became ready is not trusted"


def test_the_first_deploy_killed_before_ready_leaves_nothing_to_trust(arbiter, tmp_path):
    arb, events = arbiter
    v1 = release(tmp_path, "1.0.0")
    arb.lifecycle.deploy(Deploy(version="1.0.0", release_dir=v1))
    assert arb.host.at_fork[-1][1]["deploying"] == {"version": "1.0.0", "release_dir": v1, "previous_dir": None}
    assert_recorded_before_the_link_moved(events, v1)
    lc = cold_start_after_a_kill(arb, arb.host.at_fork[-1])
    assert not os.path.lexists(lc.current_link) and lc.starting is None, "waits for the poller instead"


def test_an_operator_rollback_names_itself_durably_before_current_moves(arbiter, tmp_path):
    arb, events = arbiter
    v1 = serve(arb, tmp_path, "1.0.0")
    v2 = serve(arb, tmp_path, "1.1.0")
    answer = arb.commands.control_command({"command": "rollback", "args": {"to": "1.0.0"}})
    assert answer["ok"] is True, answer
    link, on_disk = arb.host.at_fork[-1]
    assert link == v1 and on_disk["deploying"] == {"version": "1.0.0", "release_dir": v1, "previous_dir": v2}
    assert_recorded_before_the_link_moved(events, v1)
    lc = cold_start_after_a_kill(arb, arb.host.at_fork[-1])
    assert releases.read_link(lc.current_link) == v2 and lc.starting.release_dir == v2


def test_a_crash_loop_rollback_is_recorded_before_current_moves(arbiter, tmp_path):
    arb, events = arbiter
    lc = arb.lifecycle
    v1 = serve(arb, tmp_path, "1.0.0")
    v2 = serve(arb, tmp_path, "1.1.0")
    for _ in range(PROBATION_DEATHS - 1):
        arb.host.running.discard(lc.serving.pid)
        lc.child_exited(lc.serving.pid, exited(1))
        lc.clock.t = lc.next_deadline()
        lc.fire(lc.clock.t)  # respawn
        make_ready(arb)
    arb.host.running.discard(lc.serving.pid)
    lc.child_exited(lc.serving.pid, exited(1))
    assert lc.starting.reason == "rollback" and lc.starting.release_dir == v1
    link, on_disk = arb.host.at_fork[-1]
    assert link == v1 and on_disk["last_deploy"]["rolled_back_to"] == "1.0.0" and on_disk["deploying"] is None
    assert_recorded_before_the_link_moved(events, v1)
    # Killed while the release that served before starts again: it is trusted (it served), never the one
    # that crash-looped.
    cold = cold_start_after_a_kill(arb, arb.host.at_fork[-1])
    assert releases.read_link(cold.current_link) == v1 and cold.starting.release_dir == v1
    assert v2 != v1


def test_a_switch_that_cannot_be_recorded_does_not_happen(tmp_path):
    class FullDisk(FakeHost):
        def record(self):
            raise OSError(28, "No space left on device")

    cfg = from_options({"registry": "file:///nowhere", "app": ["app"], "workdir": str(tmp_path), "ready": "delay:1s"})
    host = FullDisk()
    lc = Lifecycle(cfg, host, Clock())
    v1 = release(tmp_path, "1.0.0")
    lc.deploy(Deploy(version="1.0.0", release_dir=v1))
    answer = host.sent("deployed")[-1]
    assert answer["ok"] is False and answer["retry"] is True and "No space left" in answer["error"]
    assert not os.path.lexists(lc.current_link) and host.spawned == [] and lc.deploying is None
