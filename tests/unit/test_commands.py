"""The operator's commands (dewy/master/commands.py), in-process: a real Arbiter (not started) on a Host that
forks nothing, a fake clock, and the poller's end of a real socketpair to read what the master tells it.

Rollback (its target, the switch, the hold after it), pause / resume, deploy-now, reload and status, driven
through the control socket's dispatch (`Commands.control_command`) as `dewy rollback|pause|...` sends them.
"""

from __future__ import annotations

import logging
import os
import socket

import pytest

from dewy import pause, protocol
from dewy.config import from_options
from dewy.master.configview import ConfigLoadError
from dewy.protocol import Channel

from .test_switch import make_arbiter, make_ready, release, serve


@pytest.fixture
def master(tmp_path):
    """(arbiter, poller_end): poller_end.messages() -> what the master sent the poller since the last call."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # a reload sets up logging again
    cfg = from_options({"registry": "file:///nowhere", "app": ["app"], "workdir": str(tmp_path),
                        "ready": "notify:5s", "graceful-timeout": "10s"})
    arb = make_arbiter(cfg)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    arb.poller.channel = Channel(ours)
    poller_end = Channel(theirs)
    poller_end.messages = lambda: [protocol.parse(m) for m in poller_end.receive()]
    yield arb, poller_end
    arb.poller.close()
    poller_end.close()
    arb.selector.close()
    root.handlers[:], root.level = handlers, level


def ask(arb, command: str, **args) -> dict:
    return arb.commands.control_command({"command": command, "args": args})


def of(messages, cls) -> list:
    return [m for m in messages if isinstance(m, cls)]


def test_rollback_picks_the_release_before_switches_and_holds_newer_versions(master, tmp_path):
    arb, poller = master
    v1 = serve(arb, tmp_path, "1.0.0")
    serve(arb, tmp_path, "1.1.0")
    v3 = serve(arb, tmp_path, "1.2.0")
    poller.messages()
    answer = ask(arb, "rollback")
    assert answer == {"ok": True, "from": "1.2.0", "to": "1.1.0", "release_dir": answer["release_dir"]}
    assert ask(arb, "rollback")["error"].startswith("generation 4 is starting [rollback]")
    make_ready(arb)
    told = of(poller.messages(), protocol.Rollback)
    assert told == [protocol.Rollback(version="1.2.0", to_version="1.1.0", operator=True, error=(
        "rolled back from 1.2.0 to 1.1.0 by the operator (dewy rollback)"))]
    held = pause.read(str(tmp_path))
    assert held["newer_than"] == "1.2.0" and held["also_newer_than"] == ["1.1.0"]
    assert arb.board.data()["last_deploy"]["rolled_back_from"] == "1.2.0"
    # --to names a version; one that is not unpacked is refused with what is.
    assert ask(arb, "rollback", to="9.9.9") == {"ok": False, "error": "version 9.9.9 is not unpacked in %s "
                                                "(unpacked: 1.0.0, 1.1.0, 1.2.0)" % os.path.dirname(v1)}
    assert ask(arb, "rollback", to="v1.0.0")["to"] == "1.0.0"
    make_ready(arb)
    held = pause.read(str(tmp_path))
    assert held["newer_than"] == "1.1.0" and held["also_newer_than"] == ["1.0.0", "1.2.0"], "the earlier hold too"
    # A deploy of a newer version ends the hold: the poller, which decides it, says so (`end-hold`).
    arb.lifecycle.deploy(protocol.Deploy(version="1.3.0", release_dir=release(tmp_path, "1.3.0")))
    make_ready(arb)
    assert arb.commands.paused is not None, "the master does not decide it"
    poller.send(protocol.EndHold(newer_than="1.0.0", why="1.3.0 deployed"))
    arb.on_poller_message()
    assert arb.commands.paused is not None, "a hold other than the one the poller names stays"
    poller.send(protocol.EndHold(newer_than="1.1.0", why="1.3.0 deployed"))
    arb.on_poller_message()
    assert pause.read(str(tmp_path)) is None and arb.commands.paused is None
    assert of(poller.messages(), protocol.Deployed)[-1].version == "1.3.0"
    assert v3


def test_nothing_to_roll_back_to_is_refused(master, tmp_path):
    arb, _ = master
    serve(arb, tmp_path, "1.0.0")
    answer = ask(arb, "rollback")
    assert answer["ok"] is False and answer["error"].startswith("no earlier release is unpacked in ")


def test_pause_refuses_deploy_now_and_resume_polls_at_once(master, tmp_path):
    arb, poller = master
    serve(arb, tmp_path, "1.0.0")
    poller.messages()
    paused = ask(arb, "pause", reason="freeze")
    assert paused["paused"]["reason"] == "freeze" and pause.read(str(tmp_path))["reason"] == "freeze"
    again = ask(arb, "pause")
    assert again["paused"] == paused["paused"], "pausing again keeps the reason and since"
    assert ask(arb, "deploy-now") == {"ok": False, "error": "deploys are paused (freeze); `dewy resume` first"}
    assert ask(arb, "resume") == {"ok": True, "resumed": True}
    assert of(poller.messages(), protocol.PollNow) == [protocol.PollNow()]
    assert ask(arb, "resume") == {"ok": True, "resumed": False}
    answer = ask(arb, "deploy-now")
    assert answer == {"ok": True, "poll_request": 1, "version": "1.0.0"}
    assert of(poller.messages(), protocol.PollNow) == [protocol.PollNow(id=1)]
    arb.poller.close()
    assert ask(arb, "deploy-now")["error"].startswith("the poller is not running right now")


def test_reload_applies_a_new_config_and_a_failed_one_shows_until_one_works(master, tmp_path):
    arb, poller = master
    serve(arb, tmp_path, "1.0.0")
    poller.messages()
    configs = []
    arb.reload_config = lambda: configs.pop(0)
    good = from_options({"registry": "file:///elsewhere", "app": ["/bin/true"], "workdir": str(tmp_path),
                         "ready": "notify:5s", "interval": "5s"})

    def bad():
        raise ConfigLoadError("dewy.ini: interval: not a duration")
    configs.append(good)
    assert ask(arb, "reload") == {"ok": True}
    reloads = of(poller.messages(), protocol.Reload)
    assert len(reloads) == 1 and reloads[0].config["interval"] == 5.0
    assert reloads[0].current == {"version": "1.0.0", "release_dir": arb.lifecycle.current_release}
    assert arb.cfg is good and arb.lifecycle.starting.reason == "restart", "the app restarts on the new config"
    make_ready(arb)
    arb.reload_config = bad
    ask(arb, "reload")
    assert arb.board.data()["last_error"] == ("reload failed, keeping the running configuration: "
                                             "dewy.ini: interval: not a duration")
    assert arb.cfg is good and arb.lifecycle.starting is None
    moved = from_options({"registry": "file:///elsewhere", "app": ["/bin/true"], "workdir": str(tmp_path / "x")})
    configs.append(moved)
    arb.reload_config = lambda: configs.pop(0)
    ask(arb, "reload")
    assert "workdir cannot change on reload; restart dewy" in arb.board.data()["last_error"]
    configs.append(good)
    ask(arb, "reload")
    assert arb.board.data()["last_error"] is None, "a reload that works clears the failure"


def test_status_and_unknown_commands(master, tmp_path):
    arb, _ = master
    serve(arb, tmp_path, "1.0.0")
    st = ask(arb, "status")["status"]
    assert (st["version"], st["state"], st["paused"], st["polls"]) == ("1.0.0", "running", None, 0)
    assert ask(arb, "nope")["error"] == ("unknown command 'nope' (known: deploy-now, pause, reload, restart, "
                                         "resume, rollback, status)")
    assert ask(arb, "status", x=1) == {"ok": False, "error": "status takes no argument x"}
