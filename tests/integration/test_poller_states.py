"""The poller says what it does (issue 15 defect 3, issue 16 items 3, 12, 13, 14, 17), against a real dewy-master:
its stated state bounds how long it may be silent, `dewy status` shows it, `dewy pause` stops a deploy under way,
and `dewy deploy-now` follows it (state, reason codes) instead of reading prose."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dewy import pause
from helpers import alive, audit_entries, clean_environment, wait_until
from integration.test_poller import poller  # noqa: F401 - a fixture: a real poller, the test as its master
from grpc_registry_server import _grpc_plain_server, grpc_plain  # noqa: F401 - fixtures: a gRPC registry
from reliability.test_disk_full import FULL_ERRORS, MIB, small_disk  # noqa: F401 - a fixture: a file system to fill


def dewy(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m dewy ARGS` and return what it did."""
    return subprocess.run([sys.executable, "-m", "dewy", *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_environment())


def stated(master, state: str, reason: str | None = None, timeout: float = 20) -> dict:
    """Wait until the status file's `poller` says state (and reason); the status then."""
    def match(s):
        p = s.get("poller") or {}
        return p.get("state") == state and (reason is None or p.get("reason") == reason)
    return master.wait_for(match, timeout, "the poller to state %s %s" % (state, reason or ""))


@pytest.mark.timeout(90)
def test_a_poller_stopped_in_a_deploy_hook_is_noticed_within_the_hook_bound(make_master, registry, tmp_path):
    """SIGSTOP while the before-deploy-hook runs: the master allows hook-timeout plus a poll's calls, not
    2 x hook-timeout + 30 min, and `dewy status` says what the poller was doing instead of a next poll in the past."""
    mark = tmp_path / "hooked"
    hook = "test -e %s || { touch %s; sleep 3; }" % (mark, mark)  # slow the first time only
    registry.publish("1.0.0")
    master = make_master(before_deploy_hook="true", hook_timeout="4s",
                         env={"DEWY_TEST_POLLER_CALL_TIMEOUT": "0.5"}).start(wait_version="1.0.0")
    st = stated(master, "idle", "up-to-date")
    assert st["poller"]["poll_request"] is None and st["poller"]["since"], st["poller"]
    master.write_ini(before_deploy_hook=hook)
    master.signal(signal.SIGHUP)
    master.wait_for(lambda s: (s.get("generation") or 0) > st["generation"] and s["state"] == "running", 20, "reload")
    registry.publish("1.1.0")
    st = stated(master, "deploying", "before-hook")
    assert st["poller"]["target"] == "1.1.0"
    poller = st["poller_pid"]
    os.kill(poller, signal.SIGSTOP)
    stopped = time.monotonic()
    text = dewy("status", "--workdir", str(master.workdir)).stdout
    assert re.search(r"^poller +deploying 1\.1\.0 \(before-hook\) since ", text, re.M), text
    assert re.search(r"^next poll +- \(deploying now\)$", text, re.M), text
    st = master.wait_for(lambda s: s.get("poller_pid") not in (None, poller), 30, "a new poller")
    took = time.monotonic() - stopped
    # ping cadence 0.5 s (interval 0.1 s) + 0.5 s (test-only call timeout) + hook-timeout 4 s, + the restart delay.
    assert took < 0.5 + 0.5 + 4 + 0.5 + 3, "restarted after %.1fs" % took
    assert re.search(r"poller \(pid %d\) said nothing for [\d.]+s while deploying 1\.1\.0 \(bound 5\.0s\): it is "
                     r"stuck" % poller, master.log_text()), master.log_tail()
    wait_until(lambda: not alive(poller), 10, "the stopped poller killed")
    master.wait_version("1.1.0", timeout=30)
    stated(master, "idle", "deployed")


@pytest.mark.timeout(90)
def test_deploy_now_on_a_full_disk_reports_the_failure_as_transient_at_once(small_disk, make_master, registry):
    """The workdir's file system is full (the status file cannot be written either): `dewy deploy-now` reports
    the poller's failure within seconds, as `failed (will retry)`, not `refused`; a failing before-deploy-hook
    the same. (It printed nothing until its timeout, and called transient failures refusals.)"""
    master = make_master(interval="1h")
    small_disk.mount(master.workdir, 32 * MIB)
    registry.publish("1.0.0")
    master.start(wait_version="1.0.0")
    w = str(master.workdir)
    small_disk.fill(master.workdir, master.status()["poller_pid"], leave=0)
    registry.publish("1.1.0")
    began = time.monotonic()
    out = dewy("deploy-now", "--workdir", w, "--timeout", "40")
    took = time.monotonic() - began
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stdout.splitlines()[-1]
    assert last.startswith("1.1.0 failed (will retry): download of app.tar.gz failed") and \
        any(e in last for e in FULL_ERRORS), out.stdout + out.stderr
    assert took < 20, "took %.1fs" % took
    assert "refused" not in out.stdout
    out = dewy("deploy-now", "--workdir", w, "--json", "--timeout", "40")
    result = json.loads(out.stdout)
    assert out.returncode == 1 and result["ok"] is False and result["retry"] is True and result["version"] == "1.1.0"

    small_disk.free()
    master.write_ini(before_deploy_hook="echo cannot; exit 4")
    master.signal(signal.SIGHUP)
    master.wait_for(lambda s: "configuration reloaded" in master.log_text(), 20, "the reload")
    out = dewy("deploy-now", "--workdir", w, "--timeout", "40")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1].startswith("1.1.0 failed (will retry): before-deploy-hook failed (exit"), \
        out.stdout
    refused = master.workdir / ".dewy" / "refused.json"
    assert not refused.exists() or "1.1.0" not in json.loads(refused.read_text()).get("versions", {})


# ------------------------------------------------------------------ the poller alone, a stand-in master at its pipe
def test_the_poller_states_each_step_decides_holds_and_ends_the_hold_it_lets_through(poller):
    """One owner for "may this version deploy now?": the poller states held / paused with the version kept back,
    each step of a deploy (downloading, unpacking, switching), and ends a rollback's hold itself (`end-hold`)
    when a newer version deployed; the master only keeps the file."""
    poller.publish("v1.0.0")
    poller.publish("v1.1.0")
    pause.write(str(poller.workdir), "switched from 1.1.0 to 1.0.0 by dewy rollback", newer_than="1.1.0",
                also_newer_than=["1.0.0"])
    poller.config()
    held = poller.expect("status", state="held")
    assert (held["reason"], held["held"], held["latest_version"]) == ("held", "1.1.0", "1.1.0"), held
    assert "by dewy rollback" in held["reason_text"]

    poller.publish("v1.2.0")
    deploy = poller.expect("deploy", version="1.2.0")
    steps = [(m["state"], m["reason"], m["target"]) for m in poller.seen if m["type"] in ("state", "status")]
    assert steps[-3:] == [("downloading", "download", "1.2.0"), ("deploying", "unpacking", "1.2.0"),
                          ("deploying", "switching", "1.2.0")], steps
    poller.answer(deploy)
    end = poller.expect("end-hold")
    assert end["newer_than"] == "1.1.0" and end["why"] == "1.2.0 deployed"
    done = poller.expect("status", state="idle")
    assert (done["reason"], done["target"], done["last_error"]) == ("deployed", "1.2.0", None), done

    pause.clear(str(poller.workdir))
    pause.write(str(poller.workdir), "release freeze")
    poller.publish("v1.3.0")
    paused = poller.expect("status", state="paused", held="1.3.0")
    assert paused["reason"] == "paused" and paused["reason_text"] == "release freeze"
    assert not [m for m in poller.seen if m["type"] == "end-hold" and m is not end], "a plain pause is never ended"


def test_a_pause_during_the_before_hook_stops_the_deploy_before_its_switch(poller):
    """`dewy pause` while a deploy runs: no `deploy` request goes to the master, nothing is refused or counted as
    a failure, and the poller states it paused; resumed, it deploys."""
    poller.publish("v1.0.0")
    poller.config(**{"before-deploy-hook": "sleep 1"})
    poller.deploy_ok("1.0.0")
    poller.expect("status", state="idle", reason="deployed")
    poller.publish("v1.1.0")
    poller.expect("state", state="deploying", reason="before-hook", target="1.1.0")
    pause.write(str(poller.workdir), "stop that")
    status = poller.expect("status", state="paused")
    assert status["held"] == "1.1.0" and status["last_error"] is None, status
    assert not [m for m in poller.seen if m["type"] == "deploy" and m["version"] == "1.1.0"]
    assert "deploys were paused while 1.1.0 was being deployed: stopped before switching to it" in poller.output()
    assert "1.1.0" not in poller.refused() and not [e for e in poller.audit() if e["version"] == "1.1.0"]
    assert not [p for p in os.listdir(poller.workdir / "releases") if p.endswith(".tmp")]
    pause.clear(str(poller.workdir))
    poller.deploy_ok("1.1.0")


@pytest.mark.timeout(90)
def test_dewy_pause_stops_a_deploy_under_way_and_status_shows_it_from_its_first_second(make_master, registry):
    """before-deploy-hook = sleep 3: `dewy pause` during it says the deploy stops before its switch, and it does
    (1.0.0 keeps serving, nothing failed or refused); `dewy resume` deploys it. (It printed "no new version is
    deployed" and 4 s later deployed 1.1.0.)"""
    registry.publish("1.0.0")
    master = make_master(before_deploy_hook="sleep 3").start(wait_version="1.0.0", timeout=40)
    w = str(master.workdir)
    stated(master, "idle", "up-to-date")
    registry.publish("1.1.0")
    published = time.monotonic()
    st = master.wait_for(lambda s: (s.get("poller") or {}).get("target") == "1.1.0", 10, "the deploy stated")
    assert time.monotonic() - published < 2, "the deploy under way shows in the status within its first second"
    text = dewy("status", "--workdir", w).stdout
    assert re.search(r"^poller +(downloading|deploying) 1\.1\.0 \(\S+\) since ", text, re.M), text
    st = stated(master, "deploying", "before-hook")
    out = dewy("pause", "--workdir", w, "--reason", "not now")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(not now): no new version is deployed until `dewy resume`; the deploy of 1.1.0 under way stops before " \
           "its switch" in out.stdout, out.stdout
    st = stated(master, "paused", "paused", timeout=20)
    assert st["poller"]["held"] == "1.1.0" and st["version"] == "1.0.0" and master.get() == (200, "1.0.0\n"), st
    assert not [e for e in audit_entries(master.workdir) if e.get("version") == "1.1.0"]
    refused = master.workdir / ".dewy" / "refused.json"
    assert not refused.exists() or "1.1.0" not in json.loads(refused.read_text()).get("versions", {})
    out = dewy("resume", "--workdir", w)
    assert out.returncode == 0
    master.wait_version("1.1.0", timeout=30)


@pytest.mark.timeout(120)
def test_deploy_now_follows_a_deploy_through_a_usr2(make_master, registry):
    """USR2 lands while the deploy `dewy deploy-now` follows runs: the new poller never read the request, so the
    client asks it again, and reports the version that serves (it exited 1 "nothing finished within 30s")."""
    registry.publish("1.0.0")
    master = make_master(interval="1h", before_deploy_hook="sleep 2").start(wait_version="1.0.0", timeout=40)
    w = str(master.workdir)
    registry.publish("1.1.0")
    follow = subprocess.Popen([sys.executable, "-m", "dewy", "deploy-now", "--workdir", w, "--timeout", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_environment())
    try:
        st = stated(master, "deploying", "before-hook")
        master.signal(signal.SIGUSR2)
        out, err = follow.communicate(timeout=90)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, out + err
    assert re.match(r"1\.1\.0 serves \(generation \d+\)$", out.splitlines()[-1]), out + err
    assert "upgrading dewy-master in place" in master.log_text()
    st = master.wait_for(lambda s: s.get("poller_pid") not in (None, st["poller_pid"]), 10, "the new poller")
    assert st["version"] == "1.1.0" and master.get() == (200, "1.1.0\n")


class SlowArtifact:
    """An HTTP server of one artifact, sent slowly (so a USR2 lands mid-download), honouring Range + If-Range."""

    def __init__(self, body: bytes, rate: int = 2 << 20):
        import http.server
        import threading

        owner = self
        self.body, self.rate, self.requests = body, rate, []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                ranged, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                owner.requests.append((ranged, if_range))
                start = int(ranged.split("=")[1].rstrip("-")) if ranged and if_range == '"a1"' else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", '"a1"')
                self.end_headers()
                step = owner.rate // 10
                self.close_connection = True  # a poller stopped mid-download resets it: no keep-alive to read
                try:
                    for at in range(start, len(body), step):
                        self.wfile.write(body[at:at + step])
                        time.sleep(0.1)
                except OSError:
                    pass  # the poller went away mid-download

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client gone mid-download is the point here
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d/app.tar.gz" % self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.mark.timeout(120)
def test_a_usr2_during_a_download_resumes_it_with_a_range_request(make_master, grpc_plain, tmp_path):
    """A download over https/http cut by USR2 (its poller is stopped and a new one started) goes on from the byte
    it reached (Range + If-Range), not from byte 0; the release deploys with the published checksum."""
    from archives import make_tar, tar_file
    from helpers import build_release, sample_app_source

    first = tmp_path / "v1.0.0.tar.gz"
    build_release(str(first), "1.0.0")
    grpc_plain.publish("v1.0.0", "file://" + str(first))
    body_path = make_tar(tmp_path / "v1.1.0.tar.gz", [
        tar_file("app.py", sample_app_source(), 0o755), tar_file("VERSION", b"1.1.0\n"),
        tar_file("payload.bin", os.urandom(6 << 20))])
    body = open(body_path, "rb").read()
    slow = SlowArtifact(body)
    try:
        master = make_master()
        master.settings["registry"] = grpc_plain.url("artifact=app.tar.gz")
        master.start(wait_version="1.0.0", timeout=40)
        grpc_plain.publish("v1.1.0", slow.url)
        st = master.wait_for(lambda s: ((s.get("download") or {}).get("done") or 0) >= 1 << 20, 30,
                             "a MiB of 1.1.0 downloaded")
        master.signal(signal.SIGUSR2)
        master.wait_for(lambda s: s.get("poller_pid") not in (None, st["poller_pid"]), 30, "the new poller")
        master.wait_version("1.1.0", timeout=60)
        resumed = [r for r in slow.requests if r[0]]
        assert resumed and resumed[0][1] == '"a1"', slow.requests
        offset = int(resumed[0][0].split("=")[1].rstrip("-"))
        assert offset >= 1 << 20, slow.requests
        assert "resuming the download of app.tar.gz at byte %d" % offset in master.log_text()
        cached = master.workdir / ".dewy" / "cache" / "1.1.0%2Fapp.tar.gz"
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == hashlib.sha256(body).hexdigest()
    finally:
        slow.close()
