"""What the master does with the poller's `deploy`, `state` and `end-hold`, in-process: a real Arbiter (not started:
it forks nothing) with the poller's end of a real socketpair (the fixture of tests/unit/test_commands.py)."""

from __future__ import annotations

from dewy import pause, protocol

from .test_commands import ask, master, of  # noqa: F401 - master is a fixture
from .test_switch import release, serve


def test_a_deploy_asked_for_while_paused_is_not_switched_to(master, tmp_path):
    """`dewy pause` reached the master after the poller last looked at the pause file: the switch (the point of
    no return) is not made; the poller is told `paused` (it states it, and deploys it after `dewy resume`)."""
    arb, poller = master
    serve(arb, tmp_path, "1.0.0")
    poller.messages()
    assert ask(arb, "pause", reason="freeze")["ok"]
    v1 = release(tmp_path, "1.1.0")
    poller.send(protocol.Deploy(version="1.1.0", release_dir=v1))
    arb.on_poller_message()
    (answer,) = of(poller.messages(), protocol.Deployed)
    assert (answer.ok, answer.retry, answer.paused, answer.error) == (False, True, True, "deploys are paused (freeze)")
    assert arb.lifecycle.starting is None and arb.lifecycle.current_version == "1.0.0"
    # A rollback's hold is the poller's to judge (it sent the deploy knowing it): that one is switched to.
    pause.clear(str(tmp_path))
    arb.commands.paused = pause.write(str(tmp_path), "held", newer_than="1.0.0")
    poller.send(protocol.Deploy(version="1.1.0", release_dir=v1))
    arb.on_poller_message()
    assert arb.lifecycle.starting is not None and arb.lifecycle.starting.version == "1.1.0"


def test_the_poller_state_is_the_status_files_poller(master, tmp_path):
    arb, poller = master
    poller.send(protocol.State(state="deploying", reason="before-hook", target="1.1.0", since="2026-12-08T03:00:00Z"))
    arb.on_poller_message()
    stated = arb.board.data()["poller"]
    assert (stated["state"], stated["reason"], stated["target"]) == ("deploying", "before-hook", "1.1.0")
