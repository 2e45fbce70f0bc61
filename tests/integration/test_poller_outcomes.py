"""What the poller makes of a registry that answers with nothing to deploy, and of a release that does not
start — through a real dewy-master with a real webhook receiver, metrics endpoint, `dewy status` and
`dewy history`.

- An empty registry, or one whose every version is refused, answered: no outage (no `registry-unreachable`,
  no backoff), one warning saying why, shown in `dewy status`.
- A release that exits before it is ready is the event `failed` ("version refused"), the metric result
  `failed` and the history result `failed` (README, Notifications and Logs and metrics).
- A version without an artifact for this host: a young one is waited for quietly, an old one is a warning
  shown in `dewy status`, said once.
- A registry outage survives a poller restart (USR2): one `registry-unreachable` per outage.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

from dewy import versions
from dewy.demo.app import build_release
from dewy.demo.demo import clean_environment, free_port
from helpers import wait_until
from notifystubs import WebhookServer

NATIVE = "app_%s_%s.tar.gz" % (versions.platform_aliases()[0][0], versions.platform_aliases()[1][0])


def dewy(*args) -> str:
    """What `python -m dewy ARGS` prints (stdout and stderr, any exit code)."""
    out = subprocess.run([sys.executable, "-m", "dewy", *args], capture_output=True, text=True, timeout=30,
                         env=clean_environment())
    return out.stdout + out.stderr


def deploy_results(port: int) -> dict:
    """dewy_deploys_total by result, scraped from the metrics endpoint."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
        text = response.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r'^dewy_deploys_total\{result="(\w+)"\} (\S+)$', text, re.M)}


def log_lines(master, needle: str) -> list:
    """The master log's lines (poller's included) containing needle."""
    return [line for line in master.log_text().splitlines() if needle in line]


def polls_go_on(master, more: int, timeout: float) -> dict:
    """Wait until the poller has reported `more` further polls (at 0.1 s, unless it backs off)."""
    start = master.status()["polls"]
    return master.wait_for(lambda s: s["polls"] >= start + more, timeout,
                           "%d more polls (no backoff: a registry that answered is no outage)" % more)


def test_an_empty_or_all_refused_registry_is_no_outage(make_master, registry):
    with WebhookServer() as hook:
        master = make_master(notifier=hook.url(), **{"poll-backoff-max": "60s"}).start()

        # An empty registry: it answered "0 tags". Polls go on every 0.1 s (a backoff would take minutes).
        st = master.wait_for(lambda s: "0 tags" in (s.get("last_error") or ""), 15, "the empty registry")
        assert "no deployable version" in st["last_error"], st
        polls_go_on(master, 15, 10)
        assert "no deployable version" in dewy("status", "--workdir", str(master.workdir))
        said = log_lines(master, "nothing to deploy: no deployable version")
        assert len(said) == 1 and " WARNING " in said[0], said
        assert "0 tags" in said[0] and not log_lines(master, "polling backs off")
        out = dewy("deploy-now", "--workdir", str(master.workdir))  # says what the registry answered
        assert "nothing to deploy: no deployable version" in out and "did not answer" not in out, out

        # Every version refused (the only one did not start): again an answer, not an outage.
        registry.publish("1.0.0", behaviour="crash-at-start")
        st = master.wait_for(lambda s: "refused: 1.0.0" in (s.get("last_error") or ""), 30,
                             "the only version refused")
        polls_go_on(master, 15, 10)
        said = log_lines(master, "nothing to deploy: no deployable version")
        assert len(said) == 2 and "1 tag: refused: 1.0.0" in said[1], said

        registry.publish("1.1.0")  # found at the next 0.1 s poll
        st = master.wait_version("1.1.0", timeout=20)
        assert st["last_error"] is None, st
        assert master.stop() == 0
        names = hook.names()
        assert "registry-unreachable" not in names, names


def test_a_release_that_does_not_start_is_failed_in_events_metrics_and_history(make_master, registry):
    """README: a release that did not start is the event `failed` (its message says "version refused"),
    the metric result `failed` and the history result `failed`; `refused` is for a bad release."""
    metrics_port = free_port()
    registry.publish("1.0.0")
    with WebhookServer() as hook:
        master = make_master(notifier=hook.url(), metrics="127.0.0.1:%d" % metrics_port).start(wait_version="1.0.0")
        registry.publish("1.1.0", behaviour="crash-at-start")
        failed = hook.wait_for(lambda: [e for e in hook.events if e["event"] in ("failed", "refused")],
                               timeout=30)[0]
        assert failed["event"] == "failed", failed
        assert failed["version"] == "1.1.0" and "exited with code 3" in failed["error"], failed
        assert "version refused" in failed["text"] and "will retry" not in failed["text"], failed
        results = wait_until(lambda: (lambda r: r.get("failed") == 1 and r)(deploy_results(metrics_port)), 10,
                             "the failed start in the metrics", lambda: deploy_results(metrics_port))
        assert results["refused"] == 0 and results["deployed"] == 1, results
        history = dewy("history", "--workdir", str(master.workdir))
        assert re.search(r"1\.0\.0 → 1\.1\.0\s+failed\s", history), history
        assert master.status()["version"] == "1.0.0" and master.get()[1].strip() == "1.0.0"
        assert master.stop() == 0
        assert "refused" not in hook.names(), hook.names()


def test_a_version_without_an_artifact_for_this_host_warns_once_unless_it_is_young(make_master, registry):
    """v1.0.0/site.tar.gz and no ?artifact=: published an hour ago, it is a warning in the log (once) and in
    `dewy status`; a version directory just created (an upload under way) is waited for quietly."""
    old = registry.root / "v1.0.0"
    old.mkdir()
    (old / "site.tar.gz").write_bytes(b"not for this host")
    os.utime(old, (os.stat(old).st_atime, os.stat(old).st_mtime - 3600))
    master = make_master()
    master.settings["registry"] = "file://%s" % registry.root  # no ?artifact=: matched by OS/arch
    master.start()
    st = master.wait_for(lambda s: "has no artifact" in (s.get("last_error") or ""), 15, "the missing artifact")
    assert "site.tar.gz" in st["last_error"] and "?artifact=" in st["last_error"], st
    polls_go_on(master, 15, 10)
    said = log_lines(master, "waiting for the artifact: version 1.0.0")
    assert len(said) == 1 and " WARNING " in said[0], said
    assert "has no artifact" in dewy("status", "--workdir", str(master.workdir))

    # A version being uploaded now: an info line, no error shown.
    young = registry.root / "v1.1.0"
    young.mkdir()
    (young / "notes.txt").write_text("the build is still uploading")
    st = master.wait_for(lambda s: s.get("last_error") is None, 15, "the young version waited for quietly")
    said = log_lines(master, "waiting for the artifact: version 1.1.0")
    assert len(said) == 1 and " INFO " in said[0], said
    build_release(str(young / NATIVE), "1.1.0")
    master.wait_version("1.1.0", timeout=20)


def test_an_outage_is_notified_once_across_a_poller_restart(make_master, registry, tmp_path):
    registry.publish("1.0.0")
    with WebhookServer() as hook:
        master = make_master(notifier=hook.url(), **{"poll-backoff-max": "0.4s"}).start(wait_version="1.0.0")
        away = tmp_path / "registry-away"
        os.rename(registry.root, away)
        hook.wait_for(lambda: "registry-unreachable" in hook.names())
        old_poller = master.status()["poller_pid"]
        master.signal(signal.SIGUSR2)  # an in-place upgrade: a new poller, the same outage
        master.wait_for(lambda s: s.get("poller_pid") not in (None, old_poller), 30, "the new poller")
        polls_go_on(master, 5, 15)
        os.rename(away, registry.root)
        hook.wait_for(lambda: "registry-reachable" in hook.names())
        assert master.status()["version"] == "1.0.0" and master.get()[0] == 200  # served throughout
        assert master.stop() == 0
        names = hook.names()
        assert names.count("registry-unreachable") == 1 and names.count("registry-reachable") == 1, names


def test_a_cache_directory_broken_after_start_is_one_line_not_a_traceback(make_master, registry, tmp_path):
    """The config check saw a usable cache directory; it breaks later (a file where its parent was): the
    restarted poller says so in one line, the app keeps serving, and fixing the disk is enough."""
    parent = tmp_path / "caches"
    parent.mkdir()
    registry.publish("1.0.0")
    master = make_master(cache="file://%s/app" % parent).start(wait_version="1.0.0")
    shutil.rmtree(parent)
    parent.write_text("not a directory\n")
    poller = master.status()["poller_pid"]
    os.kill(poller, signal.SIGKILL)
    wait_until(lambda: "cannot use the cache: " in master.log_text(), 20, "the poller's one line", master.details)
    assert "Traceback" not in master.log_text() and master.get() == (200, "1.0.0\n")
    parent.unlink()
    parent.mkdir()
    registry.publish("1.1.0")
    master.wait_version("1.1.0", timeout=60)


def test_deploy_now_says_what_the_registry_answered_not_up_to_date(make_master, registry, tmp_path):
    """1.0.0 serves; the newest version has no artifact for this host, then the registry is gone: `dewy
    deploy-now` says so each time (exit 1) instead of `up to date`, and `dewy status` shows no stale latest."""
    registry.publish("1.0.0")
    master = make_master().start(wait_version="1.0.0")
    w = str(master.workdir)
    newer = registry.root / "v1.1.0"
    newer.mkdir()
    (newer / "app_plan9_mips.tar.gz").write_bytes(b"not for this host")
    os.utime(newer, (os.stat(newer).st_atime, os.stat(newer).st_mtime - 3600))  # not an upload under way
    master.wait_for(lambda s: "has no artifact" in (s.get("last_error") or "") and s.get("latest_version") is None,
                    15, "1.1.0 without an artifact for this host")
    out = subprocess.run([sys.executable, "-m", "dewy", "deploy-now", "--workdir", w], capture_output=True,
                         text=True, timeout=60, env=clean_environment())
    assert out.returncode == 1 and "waiting for the artifact: version 1.1.0" in out.stdout, out.stdout + out.stderr
    assert "up to date" not in out.stdout
    os.rename(registry.root, tmp_path / "registry-away")
    master.wait_for(lambda s: "does not exist" in (s.get("last_error") or ""), 15, "the registry gone")
    out = subprocess.run([sys.executable, "-m", "dewy", "deploy-now", "--workdir", w], capture_output=True,
                         text=True, timeout=60, env=clean_environment())
    assert out.returncode == 1 and "the registry did not answer" in out.stdout, out.stdout + out.stderr
    assert "(latest" not in dewy("status", "--workdir", w)
    assert master.get() == (200, "1.0.0\n")


def test_a_cache_directory_broken_while_running_fails_deploys_in_one_line_with_backoff(make_master, registry,
                                                                                       tmp_path):
    """The running poller's cache directory becomes a file: each deploy attempt fails in one line (no
    traceback), retries back off, the app serves; a fixed directory lets the version deploy."""
    caches = tmp_path / "caches"
    caches.mkdir()
    registry.publish("1.0.0")
    master = make_master(cache="file://%s" % caches, **{"poll-backoff-max": "1.6s"}).start(wait_version="1.0.0")
    shutil.rmtree(caches)
    caches.write_text("not a directory\n")
    registry.publish("1.1.0")
    wait_until(lambda: len(log_lines(master, "cannot read the cache")) >= 3, 30, "three failed attempts",
               master.details)
    assert "Traceback" not in master.log_text() and master.get() == (200, "1.0.0\n")
    # A transient failure (retried with backoff, like a full disk), not a refusal of the release.
    assert "1.1.0" not in json.loads((master.workdir / ".dewy" / "refused.json").read_text()
                                     if (master.workdir / ".dewy" / "refused.json").exists() else "{}").get("versions", {})
    caches.unlink()
    caches.mkdir()
    master.wait_version("1.1.0", timeout=30)
