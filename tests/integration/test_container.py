"""`mode = container` against real podman (runc) and a real docker-registry: deploys, a switch under load with 0
failed requests, refusals (an image that exits, one never healthy), a re-pushed tag, a clean stop, strays
after a restart, and a registry with htpasswd auth. Images are busybox-static built in the session
(tests/containers.py)."""

import json
import subprocess
import sys
from signal import SIGKILL, SIGTERM

from helpers import Load, alive, free_port, http_get, wait_audit, wait_until

SETTINGS = dict(mode="container", app=None, ready=None, runtime="podman", health_path="/health", health_timeout="10s",
                drain_time="5s", interval="0.2s", graceful_timeout=None, verify_checksum="required")


def container_master(make_master, world, repo, **extra):
    """An unstarted master in container mode for img://<registry>/<repo>, proxying a free port to port 80."""
    port = free_port()
    env = extra.pop("env", None)
    url = world.url(repo, auth=extra.pop("auth", False))
    master = make_master(ports=["127.0.0.1:%d:80" % port], env=env, **dict(SETTINGS, **extra))
    master.settings.update({"registry": url, "name": repo})  # ini keys the factory's own arguments would shadow
    master.http_port = port
    return master


def answer(master) -> str | None:
    """What / answers through dewy's socket now (None when it does not)."""
    try:
        status, body = http_get(master.http_port, "/", timeout=2)
    except OSError:
        return None
    return body.strip() if status == 200 else None


def wait_serving(master, content: str, timeout: float = 60) -> dict:
    """Wait until dewy's socket answers content and the status says running; the status."""
    wait_until(lambda: answer(master) == content, timeout, "the container to answer %r" % content, master.details)
    return master.wait_for(lambda st: st.get("state") == "running", timeout, "state running")


def test_deploys_then_switches_under_load_with_zero_failed_requests_and_stops_clean(make_master, oci_world):
    first = oci_world.push("zd", "1.0.0")
    master = container_master(make_master, oci_world, "zd", replicas="2").start()
    status = wait_serving(master, "1.0.0")
    # The version names the digest it runs: a re-pushed tag is another release.
    assert status["version"] == "1.0.0+sha256.%s" % first.split(":")[1][:12]
    assert status["mode"] == "container"
    assert len(oci_world.containers("zd")) == 2  # replicas

    with Load(master.http_port, threads=4) as load:
        assert load.wait_requests(20), load.summary()
        oci_world.push("zd", "1.1.0")
        assert load.wait_seen("1.1.0", timeout=60), load.summary() + "\n" + master.details()
        assert load.wait_requests(50), load.summary()
    assert load.failed == 0, load.summary()
    assert load.versions == ["1.0.0", "1.1.0"], load.summary()
    # The old container drained and went; `dewy container list` shows the one that serves.
    wait_until(lambda: len(oci_world.containers("zd")) == 2, 30, "the old containers to go",
               lambda: str(oci_world.containers("zd")))
    listed = subprocess.run([sys.executable, "-m", "dewy", "container", "list", "--runtime", "podman",
                             "--name", "zd", "--json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["containers"]
    assert [r["version"] for r in rows] == [master.status()["version"]] * 2 and rows[0]["state"] == "running"
    assert sorted(r["replica"] for r in rows) == ["0", "1"]
    assert rows[0]["version"].startswith("1.1.0+sha256.")
    entries = wait_audit(master.workdir, lambda es: any(e["result"] == "deployed" and e["version"].startswith("1.1.0")
                                                        for e in es), "1.1.0 deployed")
    assert [e["mode"] for e in entries] == ["container", "container"]
    history = subprocess.run([sys.executable, "-m", "dewy", "history", "--workdir", str(master.workdir)],
                             capture_output=True, text=True, timeout=60)
    assert history.returncode == 0 and "1.1.0+sha256." in history.stdout.splitlines()[1], history.stdout

    # SIGTERM: the generation drains, stops its container; none is left.
    assert master.stop(SIGTERM) == 0
    assert oci_world.containers("zd") == []


def test_an_image_that_exits_never_gets_healthy_or_cannot_be_pulled_is_refused_while_the_old_one_serves(make_master, oci_world):
    oci_world.push("bad", "1.0.0")
    master = container_master(make_master, oci_world, "bad", health_timeout="3s").start()
    wait_serving(master, "1.0.0")

    oci_world.push("bad", "1.1.0", kind="broken")
    entries = wait_audit(master.workdir, lambda es: any(e["version"].startswith("1.1.0") and e["result"] != "deployed"
                                                        for e in es), "1.1.0 refused", timeout=60)
    failed = [e for e in entries if e["version"].startswith("1.1.0")][0]
    assert failed["result"] == "failed" and "exited with code 3" in failed["error"], failed
    assert "broken image: cannot start" in failed["error"], failed  # the container's own stderr, in the reason
    assert answer(master) == "1.0.0"

    oci_world.push("bad", "1.2.0", kind="unhealthy")
    entries = wait_audit(master.workdir, lambda es: any(e["version"].startswith("1.2.0") for e in es),
                         "1.2.0 refused", timeout=60)
    failed = [e for e in entries if e["version"].startswith("1.2.0")][0]
    assert failed["result"] == "failed" and "not ready within health-timeout 3s" in failed["error"], failed
    assert "GET /health: HTTP/1.1 404" in failed["error"], failed

    oci_world.push("bad", "1.3.0")
    oci_world.break_layers("bad", "1.3.0")  # the manifest answers, the pull fails
    entries = wait_audit(master.workdir, lambda es: any(e["version"].startswith("1.3.0") for e in es),
                         "1.3.0 refused", timeout=60)
    failed = [e for e in entries if e["version"].startswith("1.3.0")][0]
    assert failed["result"] == "failed" and "podman pull of" in failed["error"], failed
    refused = json.loads((master.workdir / ".dewy" / "refused.json").read_text())["versions"]
    assert sorted(v.split("+")[0] for v in refused) == ["1.1.0", "1.2.0", "1.3.0"]
    assert "notify failed: bad: deploy of 1.1.0+" in master.log_text()  # notified (the log notifier)
    status = master.wait_for(lambda st: st.get("state") == "running", 10, "running")
    assert status["version"].startswith("1.0.0+") and answer(master) == "1.0.0"
    # The refused generations removed their containers: only the serving one is left.
    wait_until(lambda: len(oci_world.containers("bad")) == 1, 30, "one container",
               lambda: str(oci_world.containers("bad")))


def test_a_tag_pushed_again_with_other_content_is_redeployed(make_master, oci_world):
    oci_world.push("rp", "1.0.0", content="first build")
    master = container_master(make_master, oci_world, "rp").start()
    before = wait_serving(master, "first build")["version"]
    oci_world.push("rp", "1.0.0", content="second build")
    after = wait_serving(master, "second build")["version"]
    assert before != after and before.split("+")[0] == after.split("+")[0] == "1.0.0"
    # `dewy rollback` goes back to the first build's digest (its release is kept), and holds there.
    done = subprocess.run([sys.executable, "-m", "dewy", "rollback", "--workdir", str(master.workdir), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_serving(master, "first build")["version"] == before


def test_a_container_that_crash_loops_after_its_deploy_is_rolled_back(make_master, oci_world):
    oci_world.push("loop", "1.0.0")
    master = container_master(make_master, oci_world, "loop").start()
    wait_serving(master, "1.0.0")
    oci_world.push("loop", "1.1.0", kind="crashing")
    entries = wait_audit(master.workdir, lambda es: any(e["result"] == "rolled-back" for e in es),
                         "the crash-loop rollback", timeout=90)
    rolled = [e for e in entries if e["result"] == "rolled-back"][0]
    assert rolled["version"].startswith("1.1.0+") and rolled["to_version"].startswith("1.0.0+"), rolled
    wait_serving(master, "1.0.0")
    refused = json.loads((master.workdir / ".dewy" / "refused.json").read_text())["versions"]
    assert [v.split("+")[0] for v in refused] == ["1.1.0"]
    wait_until(lambda: len(oci_world.containers("loop")) == 1, 30, "one container",
               lambda: str(oci_world.containers("loop")))


def test_a_restarted_dewy_replaces_strays_and_touches_no_other_container(make_master, oci_world):
    oci_world.push("rs", "1.0.0")
    image = "%s/rs:1.0.0" % oci_world.registry.host
    # A stray of this app (its generation process is gone), another app's container, and one not dewy's.
    labels = ["--label", "dewy.managed=true", "--label", "dewy.pid=999999999"]
    oci_world.podman("run", "-d", "--name", "stray-rs", *labels, "--label", "dewy.app=rs", image)
    oci_world.podman("run", "-d", "--name", "other-app", *labels, "--label", "dewy.app=rs-other", image)
    oci_world.podman("run", "-d", "--name", "not-dewys", image)
    try:
        master = container_master(make_master, oci_world, "rs").start()
        wait_serving(master, "1.0.0")
        assert "stray-rs" not in oci_world.containers("rs") and len(oci_world.containers("rs")) == 1
        # Killed hard, master and generation: the next master serves again with one container of its own.
        generation = master.status()["app_pids"][0]
        master.signal(SIGKILL)
        master.proc.wait(10)
        if alive(generation):
            import os
            os.kill(generation, SIGKILL)
        wait_until(lambda: not alive(generation), 10, "the generation to die")
        master.start()
        wait_serving(master, "1.0.0")
        wait_until(lambda: len(oci_world.containers("rs")) == 1, 30, "one container of rs",
                   lambda: str(oci_world.containers("rs")))
        assert master.stop(SIGTERM) == 0
        assert oci_world.containers("rs") == []
        assert {"other-app", "not-dewys"} <= set(oci_world.containers())
    finally:
        oci_world.podman("rm", "-f", "--ignore", "-t", "0", "stray-rs", "other-app", "not-dewys", check=False)


def test_registry_with_htpasswd_auth_needs_docker_username_and_password(make_master, oci_world):
    from containers import PASSWORD, USER

    oci_world.push("au", "1.0.0", auth=True)
    anonymous = container_master(make_master, oci_world, "au", auth=True).start()
    status = anonymous.wait_for(lambda st: "credentials" in (st.get("last_error") or ""), 30, "an auth error")
    assert "401" in status["last_error"] and "DOCKER_USERNAME" in status["last_error"]
    assert anonymous.stop(SIGTERM) == 0

    master = container_master(make_master, oci_world, "au", auth=True,
                              env={"DOCKER_USERNAME": USER, "DOCKER_PASSWORD": PASSWORD})
    master.start()
    wait_serving(master, "1.0.0")
    assert PASSWORD not in master.log_text()
