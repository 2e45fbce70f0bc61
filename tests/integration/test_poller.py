"""The real poller process, driven over a real socketpair by the test playing the master (PollerHarness).

Nothing is mocked: a file:// registry directory, real tar.gz artifacts, the real file cache, real
hooks. Every wait is for an actual message or file, with a deadline.
"""

import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

import psutil
import pytest

from dewy import audit, config, versions
from dewy.protocol import Channel
from helpers import wait_until

ARTIFACT = "app_%s_%s.tar.gz" % (versions.platform_aliases()[0][0], versions.platform_aliases()[1][0])
DEADLINE = 15.0


def make_tarball(path, files: dict) -> bytes:
    """Write a tar.gz at path holding files (member name -> text); return its bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


class PollerHarness:
    """A real poller process with the test at the master's end of its pipe (no dewy-master runs).

    It publishes to a file:// registry, sends what dewy-master would send (config, deploy answers),
    receives what the poller sends, and reads what it leaves in the workdir. tests/helpers.Master is the
    other harness: a whole dewy-master process, poller included.
    """

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.registry = tmp_path / "registry"
        self.workdir = tmp_path / "work"
        self.registry.mkdir()
        self.workdir.mkdir()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel = Channel(ours)
        self.log_path = tmp_path / "poller.log"
        env = {k: v for k, v in os.environ.items() if k != "DEWY_CACHEDIR"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dewy.poller", "--fd", str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], stdout=log, stderr=log, env=env)
        theirs.close()
        self.pending = []
        self.seen = []

    # --- publishing -------------------------------------------------------------------------

    def publish(self, tag, files=None, name=ARTIFACT, extra=None) -> bytes:
        """Put a release <tag>/<name> (a tar.gz of files) in the registry; return the artifact bytes."""
        # Built aside and renamed into place, as a careful publisher does: the poller never sees
        # a half-published version.
        staging = self.tmp_path / ("staging-" + tag)
        staging.mkdir()
        data = make_tarball(staging / name, files or {"bin/app": "#!/bin/sh\necho %s\n" % tag})
        for extra_name, text in (extra or {}).items():
            (staging / extra_name).write_text(text(data) if callable(text) else text)
        os.rename(staging, self.registry / tag)
        return data

    def unpublish(self, tag):
        shutil.rmtree(self.registry / tag)

    # --- the pipe ---------------------------------------------------------------------------

    def config(self, current=None, type_="config", **options):
        values = {"registry": "file://%s" % self.registry, "mode": "server", "app": ["current/bin/app"],
                  "workdir": str(self.workdir), "interval": "0.1",
                  "cache": "file://%s" % (self.tmp_path / "cache"), "log-level": "debug"}
        values.update(options)
        cfg = config.from_options(values)
        self.channel.send(type_, config=cfg.to_json(), current=current)
        return cfg

    def receive(self, deadline=DEADLINE):
        """The next message from the poller (fails the test after deadline seconds)."""
        end = time.monotonic() + deadline
        while not self.pending:
            left = end - time.monotonic()
            assert left > 0, "no message from the poller within %ss\n%s" % (deadline, self.output())
            ready, _, _ = select.select([self.channel], [], [], left)
            if ready:
                self.pending.extend(self.channel.receive())
                if self.channel.closed and not self.pending:
                    raise AssertionError("the poller closed the pipe\n%s" % self.output())
        msg = self.pending.pop(0)
        self.seen.append(msg)
        return msg

    def expect(self, type_, deadline=DEADLINE, **match):
        """Skip messages until one of type_ (and matching fields) arrives; fail on an unexpected deploy."""
        end = time.monotonic() + deadline
        while True:
            msg = self.receive(max(0.01, end - time.monotonic()))
            if msg["type"] == type_ and all(msg.get(k) == v for k, v in match.items()):
                return msg
            if msg["type"] == "deploy":
                raise AssertionError("unexpected deploy %r while waiting for %s %r" % (msg, type_, match))

    def polls(self, count):
        """Wait for `count` more polls (status messages); return every message seen meanwhile."""
        got, seen = 0, []
        while got < count:
            msg = self.receive()
            seen.append(msg)
            got += msg["type"] == "status"
        return seen

    def no_deploy_for(self, polls=5):
        """Assert the next `polls` polls bring no deploy request."""
        deploys = [m for m in self.polls(polls) if m["type"] == "deploy"]
        assert not deploys, deploys

    def answer(self, deploy, ok=True, error=None, generation=1):
        self.channel.send("deployed", version=deploy["version"], ok=ok, error=error,
                          generation=generation if ok else None, release_dir=deploy["release_dir"])

    def deploy_ok(self, version, **match):
        """Wait for a deploy of version and answer it ok (as the master would after switching)."""
        msg = self.expect("deploy", version=version, **match)
        self.answer(msg)
        return msg

    # --- what the poller leaves on disk -----------------------------------------------------

    def audit(self):
        return audit.read(str(self.workdir))

    def wait_audit(self, result, version, **match):
        """The first audit entry with this result, version (and other fields), once it is written."""
        return self.wait_for(lambda: next((e for e in self.audit()
                                           if e["result"] == result and e["version"] == version
                                           and all(e.get(k) == v for k, v in match.items())), None),
                             "audit %s %s %r" % (result, version, match))

    def wait_for(self, predicate, what, deadline=DEADLINE):
        """predicate()'s first truthy value, polling until deadline; the failure shows the poller's output."""
        return wait_until(predicate, deadline, what, self.output)

    def refused(self):
        try:
            with open(self.workdir / ".dewy" / "refused.json") as fh:
                return json.load(fh)["versions"]
        except FileNotFoundError:
            return {}

    def output(self):
        try:
            return "--- poller output ---\n" + self.log_path.read_text()[-8000:]
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.channel.close()


@pytest.fixture
def poller(tmp_path):
    harness = PollerHarness(tmp_path)
    yield harness
    harness.close()


def test_deploy_refuse_newer_and_delete_newest(poller):
    artifact = poller.publish("v1.0.0")
    poller.config()
    deploy = poller.expect("deploy")
    assert deploy["version"] == "1.0.0" and deploy["tag"] == "v1.0.0"
    assert deploy["artifact"] == ARTIFACT and deploy["previous_version"] is None
    assert deploy["sha256"] == hashlib.sha256(artifact).hexdigest()
    release_dir = deploy["release_dir"]
    assert os.path.isabs(release_dir) and os.path.dirname(release_dir) == str(poller.workdir / "releases")
    with open(os.path.join(release_dir, "bin", "app")) as fh:
        assert "v1.0.0" in fh.read()
    # The artifact sits in the cache under <version>/<artifact>.
    assert os.listdir(poller.tmp_path / "cache").count("1.0.0%2F" + ARTIFACT) == 1

    poller.answer(deploy)
    entry = poller.wait_audit("deployed", "1.0.0")
    assert entry["mode"] == "server" and entry["previous_version"] is None and entry["error"] is None
    shipped = poller.wait_for(
        lambda: [n for n in os.listdir(poller.registry / "v1.0.0") if n.startswith("shipped_to_")], "shipped_to record")
    assert re.fullmatch(r"shipped_to_.+_server_at_\d{8}T\d{6}\.\d{9}Z\.txt", shipped[0]), shipped
    assert "1.0.0" in (poller.registry / "v1.0.0" / shipped[0]).read_text()
    manifest = json.loads((poller.workdir / ".dewy" / "releases.json").read_text())
    assert manifest[os.path.basename(release_dir)]["version"] == "1.0.0"
    status = poller.expect("status")
    assert status["latest_version"] == "1.0.0" and status["last_error"] is None and status["last_poll"]
    poller.no_deploy_for(3)  # 1.0.0 runs: nothing to do

    # A newer release that the master cannot start is refused, and not retried while it is newest.
    poller.publish("v1.1.0")
    failed = poller.expect("deploy", version="1.1.0")
    assert failed["previous_version"] == "1.0.0"
    poller.answer(failed, ok=False, error="exited with status 1 before ready")
    poller.wait_for(lambda: "1.1.0" in poller.refused(), "1.1.0 refused")
    assert "exited with status 1" in poller.refused()["1.1.0"]["reason"]
    entry = poller.wait_audit("failed", "1.1.0")
    assert entry["previous_version"] == "1.0.0" and "exited with status 1" in entry["error"]
    assert not os.path.exists(failed["release_dir"])
    poller.no_deploy_for(5)

    # A newer one still gets deployed.
    poller.publish("v1.2.0")
    poller.deploy_ok("1.2.0", previous_version="1.0.0")
    poller.wait_for(lambda: any(n.startswith("shipped_to_") for n in os.listdir(poller.registry / "v1.2.0")),
                    "shipped_to record of 1.2.0")

    # The newest disappears: the next newest (not refused) is the one to run — the FAQ rollback.
    poller.unpublish("v1.2.0")
    back = poller.deploy_ok("1.0.0", previous_version="1.2.0")
    poller.wait_audit("deployed", "1.0.0", previous_version="1.2.0")
    assert os.path.isdir(back["release_dir"])
    assert "the newest deployable version 1.0.0 is older than the running 1.2.0" in poller.log_path.read_text()
    poller.no_deploy_for(3)

    poller.channel.send("stop")
    assert poller.proc.wait(timeout=5) == 0


def test_checksum_mismatch_is_refused(poller):
    poller.publish("v1.0.0", extra={"SHA256SUMS": "%s  %s\n" % ("0" * 64, ARTIFACT)})
    poller.config()
    poller.wait_for(lambda: "1.0.0" in poller.refused(), "1.0.0 refused")
    assert "checksum mismatch" in poller.refused()["1.0.0"]["reason"]
    entry = poller.wait_audit("refused", "1.0.0")
    assert "checksum mismatch" in entry["error"]
    poller.no_deploy_for(5)
    assert not any(n.startswith("1.0.0") for n in os.listdir(poller.tmp_path / "cache"))
    assert not (poller.workdir / "releases").exists() or os.listdir(poller.workdir / "releases") == []

    # A fixed release with a correct checksum goes through.
    data = poller.publish("v1.0.1", files={"bin/app": "fixed"},
                          extra={ARTIFACT + ".sha256": lambda data: hashlib.sha256(data).hexdigest()})
    deploy = poller.expect("deploy", version="1.0.1")
    assert deploy["sha256"] == hashlib.sha256(data).hexdigest()


def test_escaping_archive_is_refused(poller, tmp_path):
    version_dir = poller.registry / "v1.0.0"
    version_dir.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (version_dir / ARTIFACT).write_bytes(buf.getvalue())
    poller.config()
    poller.wait_for(lambda: "1.0.0" in poller.refused(), "1.0.0 refused")
    assert "unsafe archive" in poller.refused()["1.0.0"]["reason"]
    poller.wait_audit("refused", "1.0.0")
    poller.no_deploy_for(5)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert os.listdir(poller.workdir / "releases") == []


def test_before_hook_failure_aborts_and_is_retried(poller):
    poller.publish("v1.0.0")
    hook_env = poller.tmp_path / "hook.env"
    poller.config(**{"before-deploy-hook": "env | grep ^DEWY_ > %s.tmp; mv %s.tmp %s; exit 7" % (hook_env, hook_env, hook_env), "mode": "assets",
                     "app": None, "cache": "memory"})
    entry = poller.wait_audit("failed", "1.0.0")
    assert "before-deploy-hook failed (exit status 7)" in entry["error"]
    poller.no_deploy_for(5)
    assert poller.refused() == {}  # a hook failure does not refuse the version
    # Retried every poll, but audited once per run of identical failures.
    assert [e["result"] for e in poller.audit()] == ["failed"]
    env = dict(line.split("=", 1) for line in hook_env.read_text().splitlines())
    assert env["DEWY_VERSION"] == "1.0.0" and env["DEWY_MODE"] == "assets"
    assert env["DEWY_PREVIOUS_VERSION"] == ""
    assert env["DEWY_RELEASE_DIR"].startswith(str(poller.workdir / "releases"))
    # Each attempt's unpacked release is removed again (one may be in flight right now).
    assert len(os.listdir(poller.workdir / "releases")) <= 1

    # The operator fixes the hook (SIGHUP on the master -> reload): the deploy goes through.
    marker = poller.tmp_path / "after.ran"
    poller.config(type_="reload", **{"before-deploy-hook": "test -d \"$DEWY_RELEASE_DIR\"", "mode": "assets",
                                     "app": None, "cache": "memory",
                                     "after-deploy-hook": "echo $DEWY_VERSION > %s" % marker})
    deploy = poller.deploy_ok("1.0.0")
    assert os.path.isfile(os.path.join(deploy["release_dir"], "bin", "app"))
    poller.wait_for(lambda: marker.exists() and marker.read_text() == "1.0.0\n", "after-deploy-hook")
    entry = poller.wait_audit("deployed", "1.0.0")
    assert entry["mode"] == "assets"
    assert any(n.startswith("shipped_to_") and "_assets_at_" in n for n in os.listdir(poller.registry / "v1.0.0"))


def test_retried_deploys_back_off_and_a_reload_retries_at_once(poller):
    poller.publish("v1.0.0")
    stamps = poller.tmp_path / "attempts"
    hook = "date +%%s.%%N >> %s; exit 1" % stamps
    poller.config(**{"before-deploy-hook": hook, "mode": "assets", "app": None, "cache": "memory",
                     "poll-backoff-max": "10s"})

    def attempts():
        return [float(line) for line in stamps.read_text().split()] if stamps.exists() else []
    poller.wait_for(lambda: len(attempts()) >= 5, "five attempts", deadline=30)
    gaps = [b - a for a, b in zip(attempts(), attempts()[1:])]
    # interval 0.1 s doubling per failure (±10% jitter); the hook's own run time adds the same to each gap
    assert gaps[3] - gaps[0] >= 0.5, gaps
    assert poller.refused() == {}
    # A reload (the operator fixed something) tries again at once, from the interval.
    poller.config(type_="reload", **{"before-deploy-hook": "true", "mode": "assets", "app": None,
                                     "cache": "memory"})
    poller.deploy_ok("1.0.0")


def test_rollback_refuses_the_version_across_restarts(poller, tmp_path):
    poller.publish("v1.0.0")
    poller.publish("v1.1.0")
    poller.config(current={"version": "1.0.0", "release_dir": None})
    deploy = poller.deploy_ok("1.1.0", previous_version="1.0.0")
    poller.wait_audit("deployed", "1.1.0")
    poller.channel.send("rollback", version="1.1.0", to_version="1.0.0", error="crash-looped: 3 exits in 60s")
    poller.wait_for(lambda: "1.1.0" in poller.refused(), "1.1.0 refused")
    entry = poller.wait_audit("rolled-back", "1.1.0")
    assert entry["to_version"] == "1.0.0" and "crash-looped" in entry["error"]
    poller.no_deploy_for(5)
    assert os.path.isdir(deploy["release_dir"])

    # A new poller process (the master restarted it) still refuses 1.1.0.
    poller.channel.send("stop")
    assert poller.proc.wait(timeout=5) == 0
    poller.channel.close()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    poller.channel, poller.pending = Channel(ours), []
    with open(poller.log_path, "ab") as log:
        poller.proc = subprocess.Popen([sys.executable, "-m", "dewy.poller", "--fd", str(theirs.fileno())],
                                       pass_fds=[theirs.fileno()], stdout=log, stderr=log)
    theirs.close()
    poller.config(current={"version": "1.0.0", "release_dir": None})
    poller.no_deploy_for(5)


def test_registry_errors_are_reported_and_survived(poller):
    shutil.rmtree(poller.registry)
    poller.config()
    status = poller.expect("status")
    assert "does not exist" in status["last_error"] and status["latest_version"] is None
    poller.registry.mkdir()
    poller.publish("v2.0.0")
    poller.deploy_ok("2.0.0")
    status = poller.expect("status", last_error=None)
    assert status["latest_version"] == "2.0.0"


def test_unknown_messages_are_ignored(poller):
    poller.publish("v1.0.0")
    poller.channel.send("from-the-future", x=1)
    poller.config()
    poller.deploy_ok("1.0.0")
    poller.channel.send("another-new-type")
    poller.no_deploy_for(2)
    assert poller.proc.poll() is None


def test_eof_on_the_pipe_exits_0(poller):
    poller.config()
    poller.expect("status")
    poller.channel.close()
    assert poller.proc.wait(timeout=5) == 0


def test_sigterm_exits_promptly(poller):
    poller.config()
    poller.expect("status")
    assert psutil.Process(poller.proc.pid).cmdline()[0] == "dewy-poller"  # setproctitle
    poller.proc.send_signal(signal.SIGTERM)
    assert poller.proc.wait(timeout=5) == 0


def test_stop_while_waiting_for_the_deploy_answer(poller):
    poller.publish("v1.0.0")
    poller.config()
    poller.expect("deploy", version="1.0.0")
    poller.channel.send("stop")
    assert poller.proc.wait(timeout=5) == 0


def test_stop_while_sleeping_with_a_long_interval(poller):
    poller.config(interval="1h")
    poller.expect("status")
    started = time.monotonic()
    poller.channel.send("stop")
    assert poller.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5


def test_sigterm_during_a_hook_kills_the_hook(poller):
    poller.publish("v1.0.0")
    pid_file = poller.tmp_path / "hook.pid"
    poller.config(**{"before-deploy-hook": "sleep 60 & echo $! > %s; wait" % pid_file})
    pid = int(poller.wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the hook to start"))
    poller.proc.send_signal(signal.SIGTERM)
    assert poller.proc.wait(timeout=5) == 0

    def gone():
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    poller.wait_for(gone, "the hook's process group to be killed")


def test_verify_checksum_required_refuses_a_release_without_one(poller):
    poller.publish("v1.0.0")
    poller.config(**{"verify-checksum": "required"})
    poller.wait_for(lambda: "1.0.0" in poller.refused(), "1.0.0 refused")
    reason = poller.refused()["1.0.0"]["reason"]
    assert "no checksum published" in reason and "checksums.txt" in reason and "SHA256SUMS" in reason
    poller.publish("v1.0.1", extra={"checksums.txt": lambda data: "%s  %s\n" % (hashlib.sha256(data).hexdigest(),
                                                                                 ARTIFACT)})
    poller.deploy_ok("1.0.1")


def test_verify_checksum_off_does_not_check(poller):
    poller.publish("v1.0.0", extra={"SHA256SUMS": "%s  %s\n" % ("0" * 64, ARTIFACT)})
    poller.config(**{"verify-checksum": "off"})
    deploy = poller.deploy_ok("1.0.0")
    assert deploy["sha256"] != "0" * 64


def test_registry_outage_backs_off_and_is_logged_once(poller):
    shutil.rmtree(poller.registry)
    poller.config(interval="0.1", **{"poll-backoff-max": "0.8"})  # 100ms: the shortest interval allowed
    times = []
    for _ in range(7):
        poller.expect("status")
        times.append(time.monotonic())
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 0.1 doubling: 0.2, 0.4, 0.8, then capped at 0.8 (±10% jitter); without backoff every gap is ~0.1.
    assert gaps[-1] >= 0.6 and gaps[-2] >= 0.6, gaps
    assert max(gaps) < 1.6, gaps
    poller.registry.mkdir()
    poller.publish("v1.0.0")
    poller.deploy_ok("1.0.0")
    log_text = poller.log_path.read_text()
    assert log_text.count("does not exist (polling backs off") == 1, poller.output()
    assert log_text.count("answers again (after") == 1, poller.output()


def test_the_download_cache_is_pruned_with_the_releases(poller):
    cache = poller.tmp_path / "cache"
    poller.config(**{"keep-releases": "1"})
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        poller.publish("v" + version, files={"bin/app": "#!/bin/sh\necho %s\n" % version})
        poller.deploy_ok(version)
        poller.wait_audit("deployed", version)
    cached = sorted(name for name in os.listdir(cache) if name[0].isdigit())
    # keep-releases = 1 keeps the new release and the previous one (never pruned): so do the downloads.
    assert [name.split("%")[0] for name in cached] == ["1.1.0", "1.2.0"], cached
    assert len(os.listdir(poller.workdir / "releases")) == 2


def test_download_progress_is_logged_with_percent_rate_and_eta(tmp_path, monkeypatch):
    """Every progress interval (5 s; 0 here: every chunk) the poller logs percent, MiB/s and ETA, the size
    coming from the store (Artifact.size())."""
    monkeypatch.setenv("DEWY_TEST_PROGRESS_INTERVAL", "0")
    harness = PollerHarness(tmp_path)
    try:
        artifact = harness.publish("v1.0.0", files={"bin/app": "#!/bin/sh\n", "data.txt": os.urandom(3 << 20).hex()})
        harness.config()
        harness.deploy_ok("1.0.0")
        harness.wait_audit("deployed", "1.0.0")
        lines = re.findall(r"downloading %s: ([\d.]+)%% of ([\d.]+) MiB, [\d.]+ MiB/s, ETA \d+s" % re.escape(ARTIFACT),
                           harness.log_path.read_text())
        assert len(lines) >= 2, harness.output()
        assert float(lines[-1][1]) == round(len(artifact) / (1 << 20), 1)
        assert [float(p) for p, _ in lines] == sorted(float(p) for p, _ in lines) and float(lines[-1][0]) == 100.0
    finally:
        harness.close()


# --- fleet rollouts (dewy/fleet.py): this poller and a second "host" the test plays on the same Redis ----

def test_fleet_rollout_waits_for_its_wave_and_a_rollback_stops_the_version_fleet_wide(poller, redis_server):
    from dewy.cache import from_url as cache_from_url
    from dewy.fleet import Fleet, host_order

    url = redis_server.url(app="poller-fleet")
    # Host ids chosen so that this poller ("web-b" or "web-a") is in the second wave of 1.1.0.
    here, other = host_order(["web-a", "web-b"], "1.1.0")[::-1]
    peer = Fleet(cache_from_url(url, str(poller.tmp_path / "peer")), other, (50,), 1.0)
    peer.heartbeat("1.0.0", "serving", time.time() - 60, ttl=60)
    poller.publish("v1.0.0")
    poller.config(current={"version": "1.0.0", "release_dir": None}, cache=url, **{
        "rollout-waves": "50%", "rollout-soak": "1s", "host-id": here, "notifier": "log://"})
    poller.polls(2)
    assert peer.hosts()[here]["version"] == "1.0.0"  # our heartbeat is in Redis

    # 1.1.0: the peer is the first wave; we wait until it has served 1.1.0 for the soak.
    poller.publish("v1.1.0")
    status = poller.expect("status", latest_version="1.1.0")
    assert status["rollout"] == "1.1.0: wave 2 of 2 waits for %s to deploy 1.1.0 (it is serving 1.0.0)" % other
    poller.no_deploy_for(3)
    assert peer.hosts()[here]["state"] == "waiting"
    peer.heartbeat("1.1.0", "serving", time.time() - 1, ttl=60)  # served it for the soak (1 s)
    poller.deploy_ok("1.1.0", previous_version="1.0.0")
    poller.wait_audit("deployed", "1.1.0")

    # Our master rolls 1.1.0 back: the fleet refuses it, once, with our host and the reason.
    poller.channel.send("rollback", version="1.1.0", to_version="1.0.0", error="crash-looped: 3 exits in 60s")
    refusal = poller.wait_for(lambda: peer.refusals().get("1.1.0"), "1.1.0 refused fleet-wide")
    assert refusal["host"] == here and "crash-looped" in refusal["reason"]
    poller.wait_for(lambda: "rollout of 1.1.0 stopped fleet-wide" in poller.output(), "the fleet notice")

    # 1.2.0 fails on the peer: we run it already (first wave this time), so we go back to 1.0.0.
    poller.publish("v1.2.0")
    first = host_order([here, other], "1.2.0")[0]
    if first != here:
        peer.heartbeat("1.2.0", "serving", time.time() - 60, ttl=60)  # the peer went first and soaked
    poller.deploy_ok("1.2.0")
    poller.wait_audit("deployed", "1.2.0")
    assert peer.refuse("1.2.0", "master: exited with code 3 before it was ready") is True
    poller.deploy_ok("1.0.0", previous_version="1.2.0")
    assert "failed on %s" % other in poller.refused()["1.2.0"]["reason"]
    assert [e for e in poller.audit() if e["version"] == "1.2.0"][-1]["result"] == "refused"  # in its history
    poller.no_deploy_for(3)

    # The operator deletes the fleet's refusal of 1.2.0: this host forgets its copy at its next poll.
    peer.cache.delete("fleet/refused/1.2.0")
    poller.wait_for(lambda: "1.2.0" not in poller.refused(), "1.2.0 allowed again")
    assert "1.1.0" in poller.refused()  # still refused fleet-wide


def test_fleet_rollout_holds_a_new_version_while_the_cache_refuses_our_password(poller, redis_server):
    poller.publish("v1.0.0")
    poller.publish("v1.1.0")
    url = redis_server.url(app="bad-password", password="wrong-password-123")
    poller.config(current={"version": "1.0.0", "release_dir": None}, cache=url,
                  **{"rollout-waves": "50%", "rollout-soak": "1s", "host-id": "web-a"})
    status = poller.expect("status", latest_version="1.1.0")
    assert "refuses our credentials" in status["rollout"] and "wrong-password-123" not in status["rollout"]
    poller.no_deploy_for(5)  # not alone: that would skip every canary
    assert poller.output().count("refuses our credentials") == 1  # logged once, not at every poll
