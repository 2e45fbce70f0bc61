"""`dewy deploy-now` and `dewy pause` decide from the poller's stated state and reason codes (dewy/poller/states.py),
never from its prose: each outcome, in-process, on status dicts as the master's `status` command answers them."""

from __future__ import annotations

import pytest

from dewy.control import EXIT_FAILED, EXIT_OK, _outcome, deploy_in_flight


def status(state, reason, text=None, target=None, held=None, running="1.0.0", **more) -> dict:
    st = {"state": "running", "version": running, "latest_version": target or held or running,
          "poller": {"state": state, "reason": reason, "reason_text": text, "target": target, "held": held}}
    st.update(more)
    return st


@pytest.mark.parametrize("st, code, line", [
    (status("idle", "up-to-date"), EXIT_OK, "up to date: 1.0.0 serves"),
    (status("idle", "deployed", target="1.1.0", running="1.1.0",
            last_deploy={"version": "1.1.0", "ok": True, "generation": 4}), EXIT_OK, "1.1.0 serves (generation 4)"),
    (status("idle", "refused", "master: exited with code 3", target="1.1.0"), EXIT_FAILED,
     "1.1.0 refused: master: exited with code 3"),
    (status("idle", "deploy-failed", "before-deploy-hook failed (exit 4)", target="1.1.0"), EXIT_FAILED,
     "1.1.0 failed (will retry): before-deploy-hook failed (exit 4)"),
    # The words no longer matter: a text that does not start "nothing to deploy" is still that outcome.
    (status("idle", "nothing-deployable", "every version is refused"), EXIT_FAILED, "every version is refused"),
    (status("idle", "registry-failed", "HTTP 503"), EXIT_FAILED, "the registry did not answer: HTTP 503"),
    (status("held", "held", "switched from 1.1.0 to 1.0.0", held="1.1.0"), EXIT_OK,
     "nothing to deploy: 1.1.0 is held back (switched from 1.1.0 to 1.0.0)"),
    (status("waiting-wave", "rollout-wave", "wave 2 of 3 waits for web-1", held="1.3.0"), EXIT_OK,
     "nothing to deploy now: 1.3.0 waits for this host's rollout wave (wave 2 of 3 waits for web-1)"),
])
def test_each_stated_outcome(st, code, line):
    got = _outcome(st, st["latest_version"])
    assert got is not None and (got[0], got[2]) == (code, line)


@pytest.mark.parametrize("state, reason", [("polling", "deploy-now"), ("downloading", "download"),
                                           ("deploying", "before-hook"), ("deploying", "switching")])
def test_work_under_way_is_followed_not_reported(state, reason):
    assert _outcome(status(state, reason, target="1.1.0"), "1.1.0") is None


def test_a_deploy_seen_under_way_that_a_new_poller_finds_serving_is_reported_as_serving():
    before = {"last_deploy": {"version": "1.0.0", "ok": True, "generation": 2}}
    st = status("idle", "up-to-date", running="1.1.0", last_deploy={"version": "1.1.0", "ok": True, "generation": 3})
    assert _outcome(st, "1.1.0", followed="1.1.0", before=before)[2] == "1.1.0 serves (generation 3)"
    assert _outcome(st, "1.1.0", followed=None, before=before)[2] == "up to date: 1.1.0 serves"


def test_pause_says_what_becomes_of_the_deploy_under_way():
    assert deploy_in_flight(status("idle", "up-to-date")) == (None, "")
    stops = deploy_in_flight(status("deploying", "before-hook", target="1.1.0"))
    assert stops == ({"version": "1.1.0", "stops": True}, "the deploy of 1.1.0 under way stops before its switch")
    for st in (status("deploying", "switching", target="1.1.0"),
               status("idle", "up-to-date", deploying={"version": "1.1.0"})):
        assert deploy_in_flight(st)[0] == {"version": "1.1.0", "stops": False}
        assert "past its point of no return" in deploy_in_flight(st)[1]


def test_status_text_shows_the_stated_state_and_no_next_poll_in_the_past_as_if_fine():
    from dewy.cli import format_status

    def rows(data):
        text = format_status("/w", dict({"pid": 1, "state": "running"}, **data), True)
        return dict((line[:14].strip(), line[15:]) for line in text.splitlines())

    busy = rows({"poller": {"state": "deploying", "reason": "before-hook", "target": "1.1.0",
                            "since": "2026-12-08T03:00:00Z"}, "next_poll": "2026-12-08T03:00:01Z"})
    assert busy["poller"] == "deploying 1.1.0 (before-hook) since 2026-12-08T03:00:00Z"
    assert busy["next poll"] == "- (deploying now)"
    starting = rows({"poller": {"state": "downloading", "reason": "download", "target": "1.1.0"}})
    assert starting["download"] == "1.1.0: starting", "a deploy under way shows before its first progress"
    idle = rows({"poller": {"state": "idle", "reason": "up-to-date"}, "next_poll": "2020-01-01T00:00:00Z"})
    assert idle["next poll"].startswith("2020-01-01T00:00:00Z (overdue by ") and "has not polled" in idle["next poll"]
    stuck = rows({"poller": {"state": "stuck", "reason": "silent", "reason_text": "said nothing for 75.0s"},
                  "next_poll": "2020-01-01T00:00:00Z"})
    assert stuck["poller"] == "stuck (silent): said nothing for 75.0s"
    assert stuck["next poll"] == "- (the poller is being restarted)"
