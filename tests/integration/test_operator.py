"""Operator commands against a running dewy-master: rollback, pause/resume, deploy-now, status, history, and
the control socket itself."""

from __future__ import annotations

import datetime
import json
import re
import os
import socket
import stat
import subprocess
import sys

import pytest

from helpers import Load, audit_entries, clean_environment, wait_until


def dewy(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m dewy ARGS` and return what it did."""
    return subprocess.run([sys.executable, "-m", "dewy", *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_environment())


def polls_pass(master, n: int = 3) -> dict:
    """Wait until the poller polled n more times; the status then."""
    start = master.status()["polls"]
    return master.wait_for(lambda s: s["polls"] >= start + n, 20, "%d more polls" % n)


@pytest.mark.timeout(120)
def test_rollback_under_load_then_no_redeploy_until_a_newer_version(make_master, registry):
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    w = str(master.workdir)
    sock = master.workdir / ".dewy" / "control.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(sock).st_mode)
    with Load(master.port, threads=3) as load:
        master.deploy("1.1.0", load=load)
        out = dewy("rollback", "--workdir", w)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "rolling back from 1.1.0 to 1.0.0" in out.stdout
        assert "1.0.0 serves (generation 3); 1.1.0 is refused until a newer version is published" in out.stdout
        assert master.get() == (200, "1.0.0\n")
        assert load.wait_requests(30)
    assert load.failed == 0
    st = polls_pass(master)
    assert st["version"] == "1.0.0" and st["last_deploy"]["rolled_back_from"] == "1.1.0", "1.1.0 came back"
    assert [e["result"] for e in audit_entries(master.workdir)][-1] == "rolled-back"
    out = dewy("history", "--workdir", w, "-n", "1")
    assert "1.1.0 → 1.0.0" in out.stdout and "rolled-back" in out.stdout and "by the operator" in out.stdout

    out = dewy("rollback", "--workdir", w, "--to", "9.9.9")
    assert out.returncode == 1 and "version 9.9.9 is not unpacked" in out.stderr and "1.0.0, 1.1.0" in out.stderr
    out = dewy("rollback", "--workdir", w, "--to", "v1.0.0")
    assert out.returncode == 1 and "version 1.0.0 already serves" in out.stderr
    assert st["paused"]["newer_than"] == "1.1.0", "a hold: only a version newer than 1.1.0 deploys"
    st = master.deploy("1.2.0")  # newer than the one rolled back from: deployed, and the hold ends
    assert master.wait_for(lambda s: s["paused"] is None, 10, "the hold to end")
    out = dewy("rollback", "--workdir", w, "--to", "1.1.0", "--json")  # an operator may name a refused one
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["version"] == "1.1.0"
    # 1.2.0 is refused; 1.1.0, named by --to, is no longer, so the newest non-refused version is 1.1.0 itself.
    path = master.workdir / ".dewy" / "refused.json"
    refused = wait_until(lambda: (lambda v: v if "1.1.0" not in v else None)(json.loads(path.read_text())["versions"]),
                         10, "1.1.0 no longer refused", lambda: path.read_text())
    assert "1.2.0" in refused, refused
    out = dewy("deploy-now", "--workdir", w)
    assert out.returncode == 0 and "up to date: 1.1.0 serves" in out.stdout, out.stdout + out.stderr
    st = polls_pass(master)
    assert st["version"] == "1.1.0" and master.get() == (200, "1.1.0\n"), "the rollback did not stick"


@pytest.mark.timeout(120)
def test_pause_survives_a_master_restart_and_resume_deploys(make_master, registry):
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    w = str(master.workdir)
    out = dewy("pause", "--workdir", w, "--reason", "release freeze")
    assert out.returncode == 0 and "paused since" in out.stdout and "(release freeze)" in out.stdout, out
    registry.publish("1.1.0")
    st = polls_pass(master)
    assert st["latest_version"] == "1.1.0" and st["version"] == "1.0.0", "deployed while paused"
    assert st["paused"]["reason"] == "release freeze"
    out = dewy("status", "--workdir", w)
    assert "paused         since " in out.stdout and ": release freeze" in out.stdout
    out = dewy("deploy-now", "--workdir", w)
    assert out.returncode == 1 and "deploys are paused (release freeze); `dewy resume` first" in out.stderr

    assert master.stop() == 0
    master.start(wait_version="1.0.0")
    st = polls_pass(master)
    assert st["version"] == "1.0.0" and st["paused"]["reason"] == "release freeze", "the pause did not survive"
    assert st["last_deploy"]["version"] == "1.0.0", "last deploy shown across the restart"

    out = dewy("resume", "--workdir", w)
    assert out.returncode == 0 and "resumed" in out.stdout
    master.wait_version("1.1.0")
    assert master.status()["paused"] is None
    out = dewy("resume", "--workdir", w)
    assert out.returncode == 0 and "not paused" in out.stdout


@pytest.mark.timeout(120)
def test_deploy_now_sees_a_release_through_says_up_to_date_and_refused(make_master, registry):
    registry.publish("1.0.0")
    master = make_master(interval="1h").start(wait_version="1.0.0")  # only deploy-now polls after the first
    w = str(master.workdir)
    registry.publish("1.1.0")
    out = dewy("deploy-now", "--workdir", w)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == "asking the registry now (running 1.0.0)"
    assert "new version 1.1.0: downloading" in out.stdout and out.stdout.splitlines()[-1].startswith("1.1.0 serves")
    assert re.search(r"^\[#{30}\] 100\.0% of \d+\.\d KiB", out.stdout, re.M), out.stdout  # the bar (not 0.0 MiB)
    assert master.get() == (200, "1.1.0\n")
    out = dewy("deploy-now", "--workdir", w)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "up to date: 1.1.0 serves", out
    status = dewy("status", "--workdir", w).stdout
    # interval = 1h: the next poll is about an hour after the last (jitter aside), and nothing downloads now.
    last = re.search(r"^last poll +(\S+)", status, re.M).group(1)
    following = re.search(r"^next poll +(\S+)", status, re.M).group(1)
    gap = (datetime.datetime.fromisoformat(following.replace("Z", "+00:00"))
           - datetime.datetime.fromisoformat(last.replace("Z", "+00:00"))).total_seconds()
    assert 3000 < gap < 4000, status
    assert re.search(r"^download +-$", status, re.M) and re.search(r"^listening +127\.0\.0\.1:\d+", status, re.M), status
    registry.publish("1.2.0", behaviour="crash-at-start")
    out = dewy("deploy-now", "--workdir", w, "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    answer = json.loads(out.stdout)
    assert answer["ok"] is False and answer["version"] == "1.2.0" and "exited with code 3" in answer["last_deploy"]["error"]
    assert master.get() == (200, "1.1.0\n")


@pytest.mark.timeout(60)
def test_control_socket_protocol_errors_and_no_master(make_master, registry, tmp_path):
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    path = str(master.workdir / ".dewy" / "control.sock")

    def ask(line: bytes) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(line)
            return json.loads(s.makefile().readline())
    assert ask(b"nonsense\n") == {"ok": False, "error": "the request is not JSON"}
    assert "unknown command 'stop'" in ask(b'{"command": "stop"}\n')["error"]
    assert ask(b'{"command": "pause", "args": {"why": 1}}\n') == {"ok": False, "error": "pause takes no argument why"}
    st = ask(b'{"v": 1, "command": "status"}\n')
    assert st["ok"] is True and st["status"]["version"] == "1.0.0" and st["status"]["pid"] == master.pid
    assert master.running()
    assert master.stop() == 0
    assert not os.path.exists(path), "the socket file outlived the master"
    out = dewy("rollback", "--workdir", str(master.workdir))
    assert out.returncode == 3 and "no dewy master runs there" in out.stderr


def release_dir_of(workdir, version: str) -> str:
    """The newest unpacked release dir of version (from the manifest)."""
    entries = json.loads((workdir / ".dewy" / "releases.json").read_text())
    entries = entries.get("releases", entries)
    names = sorted(n for n, e in entries.items() if isinstance(e, dict) and e.get("version") == version)
    assert names, "version %s is not unpacked: %s" % (version, entries)
    return str(workdir / "releases" / names[-1])


def serving_1_1_0_after_1_0_0(make_master, registry):
    """A master that deployed 1.0.0, then 1.1.0 (which serves); its workdir as a str too."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    master.deploy("1.1.0")
    return master, str(master.workdir)


@pytest.mark.timeout(120)
def test_rollback_forward_keeps_the_chosen_version_and_a_hold_above_both(make_master, registry):
    """Undoing a rollback with `--to` the newer version: it serves, the output says it went forward, and the hold
    keeps it (only a version newer than both deploys); a third switch keeps what the earlier hold waited for."""
    master, w = serving_1_1_0_after_1_0_0(make_master, registry)
    out = dewy("rollback", "--workdir", w)
    assert out.returncode == 0 and "1.1.0 is refused until a newer version is published" in out.stdout, out
    out = dewy("rollback", "--workdir", w, "--to", "1.1.0")
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.splitlines()[-1]
    assert last.startswith("1.1.0 serves (generation 4); forward from 1.0.0, which is not refused"), out.stdout
    assert "1.0.0 is refused" not in out.stdout
    st = master.wait_for(lambda s: (s["paused"] or {}).get("newer_than") == "1.0.0", 10, "the new hold")
    assert st["paused"]["also_newer_than"] == ["1.1.0"], st["paused"]
    assert st["version"] == "1.1.0" and master.get() == (200, "1.1.0\n")
    st = polls_pass(master)
    assert st["version"] == "1.1.0" and st["generation"] == 4, "the poller replaced the version chosen"
    out = dewy("rollback", "--workdir", w, "--to", "1.0.0", "--json")
    assert out.returncode == 0, out.stderr
    st = master.wait_for(lambda s: (s["paused"] or {}).get("newer_than") == "1.1.0", 10, "the third hold")
    assert st["paused"]["also_newer_than"] == ["1.0.0"], "1.1.0 is in newer_than already: %s" % st["paused"]


@pytest.mark.timeout(120)
def test_rollback_forward_unrefuses_the_chosen_version_and_refuses_nothing(make_master, registry):
    master, w = serving_1_1_0_after_1_0_0(make_master, registry)
    assert dewy("rollback", "--workdir", w).returncode == 0
    out = dewy("rollback", "--workdir", w, "--to", "1.1.0")
    assert out.returncode == 0, out.stdout + out.stderr
    refused = master.workdir / ".dewy" / "refused.json"
    wait_until(lambda: not json.loads(refused.read_text())["versions"], 10, "no version refused",
               lambda: refused.read_text())
    st = polls_pass(master)
    assert st["version"] == "1.1.0" and not st["last_error"], st["last_error"]
    out = dewy("deploy-now", "--workdir", w)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "up to date: 1.1.0 serves", out.stdout


@pytest.mark.timeout(120)
def test_a_release_switched_to_by_rollback_that_crash_loops_goes_back(make_master, registry):
    """A generation started by `dewy rollback` is on probation like a deployed one: 3 crashes -> back."""
    master, w = serving_1_1_0_after_1_0_0(make_master, registry)
    # 1.0.0's release now serves ~1.5 s and exits (ready after the 1 s delay first): a crash loop once back.
    with open(os.path.join(release_dir_of(master.workdir, "1.0.0"), "BEHAVIOUR"), "w") as fh:
        fh.write("crash-after:1.5\n")
    out = dewy("rollback", "--workdir", w)
    assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith("1.0.0 serves"), out.stdout + out.stderr
    st = master.wait_for(lambda s: (s["last_deploy"] or {}).get("rolled_back_to") == "1.1.0", 40,
                         "the crash-looping 1.0.0 to be rolled back")
    assert "version 1.0.0 crashed 3 times" in st["last_deploy"]["error"], st["last_deploy"]
    master.wait_version("1.1.0")
    # 1.1.0, gone back to, serves: it is not refused (1.0.0, which crash-looped, is), and the hold of the switch
    # the crash loop undid is over; status, `dewy latest` and deploy-now agree.
    path = master.workdir / ".dewy" / "refused.json"
    wait_until(lambda: list(json.loads(path.read_text())["versions"]) == ["1.0.0"], 10, "only 1.0.0 refused",
               lambda: path.read_text())
    st = polls_pass(master)
    assert st["version"] == "1.1.0" and st["paused"] is None and not st["last_error"], st
    assert st["latest_version"] == "1.1.0", st
    out = dewy("latest", "-c", str(master.ini))
    assert out.returncode == 0 and "1.1.0" in out.stdout, out.stdout + out.stderr
    out = dewy("deploy-now", "--workdir", w)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "up to date: 1.1.0 serves", out.stdout + out.stderr


@pytest.mark.timeout(60)
def test_pause_again_without_a_reason_keeps_the_reason_and_since(make_master, registry):
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    w = str(master.workdir)
    out = dewy("pause", "--workdir", w, "--reason", "release freeze", "--json")
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)["paused"]
    out = dewy("pause", "--workdir", w)
    assert out.returncode == 0 and "paused since %s (release freeze)" % first["since"] in out.stdout, out.stdout
    assert master.wait_for(lambda s: s["paused"] == first, 10, "the first pause, unchanged")
    out = dewy("pause", "--workdir", w, "--reason", "incident 42", "--json")
    assert json.loads(out.stdout)["paused"] == dict(first, reason="incident 42"), "a new reason; the same since"


@pytest.mark.timeout(60)
def test_assets_rollback_names_no_generation(make_master, registry, tmp_path):
    registry.publish("1.0.0")
    master = make_master(ports=[], mode="assets", app=None, dir=str(tmp_path / "www")).start()
    master.wait_for(lambda s: s.get("version") == "1.0.0", what="assets 1.0.0")
    registry.publish("1.1.0")
    master.wait_for(lambda s: s.get("version") == "1.1.0", what="assets 1.1.0")
    out = dewy("rollback", "--workdir", str(master.workdir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "1.0.0 serves; 1.1.0 is refused until a newer version is published", out
    assert (tmp_path / "www" / "VERSION").read_text().strip() == "1.0.0"


CALVER = "YYYY.0M.MICRO"


@pytest.mark.timeout(150)
def test_calver_rollback_forward_refuses_nothing_and_holds_compare_calendar_versions(make_master, registry):
    """With `calver=` the hold and the forward rollback compare calendar versions: forward refuses nothing, a newer
    version ends the hold, and the poller and `dewy deploy-now` hold back only what is not newer."""
    registry.publish("2026.01.1")
    master = make_master()
    master.settings["registry"] = registry.url + "&calver=" + CALVER  # (the fixture's `registry` is the Registry)
    master.start(wait_version="2026.01.1")
    w = str(master.workdir)
    master.deploy("2026.01.2")
    out = dewy("rollback", "--workdir", w)
    assert out.returncode == 0 and "2026.01.2 is refused until a newer version is published" in out.stdout, out
    out = dewy("rollback", "--workdir", w, "--to", "2026.01.2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1].startswith("2026.01.2 serves (generation 4); forward from 2026.01.1, which is "
                                                  "not refused"), out.stdout
    refused = master.workdir / ".dewy" / "refused.json"
    wait_until(lambda: not json.loads(refused.read_text())["versions"], 10, "no version refused",
               lambda: refused.read_text())
    assert master.status()["calver"] == CALVER
    master.deploy("2026.01.3")  # newer than both: deployed, and the hold ends
    master.wait_for(lambda s: s["paused"] is None, 10, "the hold to end")
    # Back from 2026.01.3 to 2026.01.1: 2026.01.2, the newest not refused, is not newer than the hold.
    out = dewy("rollback", "--workdir", w, "--to", "2026.01.1")
    assert out.returncode == 0 and "2026.01.3 is refused until a newer version is published" in out.stdout, out
    master.wait_for(lambda s: s["latest_version"] == "2026.01.2" and s["version"] == "2026.01.1", 20,
                    "the poller to see 2026.01.2 and hold it back")
    out = dewy("deploy-now", "--workdir", w, "--timeout", "20")
    assert out.returncode == 0 and "nothing to deploy: 2026.01.2 is held back" in out.stdout, out.stdout + out.stderr
    st = polls_pass(master)
    assert st["version"] == "2026.01.1", "the hold let 2026.01.2 in"
    assert "cannot compare" not in master.log_text()


@pytest.mark.timeout(120)
def test_operator_rollbacks_are_information_not_errors(make_master, registry):
    """`dewy rollback` is the operator's own switch: logged at INFO, notified as `rolled-back` with operator: true,
    and never counted by the error limiter (four in a row all go out, no `suppressed`)."""
    from notifystubs import WebhookServer

    with WebhookServer() as hook:
        registry.publish("1.0.0")
        master = make_master(notifier=hook.url()).start(wait_version="1.0.0")
        w = str(master.workdir)
        master.deploy("1.1.0")
        for to in ("1.0.0", "1.1.0", "1.0.0", "1.1.0"):
            out = dewy("rollback", "--workdir", w, "--to", to)
            assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith(to + " serves"), out
        hook.wait_for(lambda: len([n for n in hook.names() if n in ("rolled-back", "suppressed")]) >= 4)
        rolled = [e for e in hook.events if e["event"] in ("rolled-back", "suppressed")]
        assert [e["event"] for e in rolled] == ["rolled-back"] * 4, [e["event"] for e in rolled]
        assert all(e["operator"] is True for e in rolled), rolled
        assert [(e["version"], e["to_version"]) for e in rolled] == [
            ("1.1.0", "1.0.0"), ("1.0.0", "1.1.0"), ("1.1.0", "1.0.0"), ("1.0.0", "1.1.0")], rolled
        lines = [l for l in master.log_text().splitlines() if "the master rolled" in l]
        assert len(lines) == 4 and all(" INFO " in l and " ERROR " not in l for l in lines), lines


@pytest.mark.timeout(180)
def test_deploy_now_says_serves_only_once_the_old_generation_takes_no_new_connection(make_master, registry):
    """The new generation is ready while the old one still accepts (here for 1 s after its stop signal, like an
    app with a shutdown delay): `X serves` must wait until it no longer does, so that every request after
    deploy-now's answer is the new version's."""
    registry.publish("1.0.0", behaviour="linger:1")
    master = make_master(interval="1h", ready="http:/healthz:10s").start(wait_version="1.0.0")
    w = str(master.workdir)
    for minor in (1, 2, 3):
        version = "1.%d.0" % minor
        registry.publish(version, behaviour="linger:1")
        out = dewy("deploy-now", "--workdir", w)
        assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith(version + " serves"), out
        answers = [master.get(timeout=5) for _ in range(5)]
        assert answers == [(200, version + "\n")] * 5, (version, answers)
