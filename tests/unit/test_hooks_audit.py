"""Deploy hooks (real shells, real process groups) and the audit log."""

import json
import os
import stat
import time
from datetime import datetime, timezone

import psutil
import pytest

from dewy import audit
from dewy.hooks import MAX_OUTPUT, run_hook


def wait_gone(pid: int, deadline: float = 5.0) -> bool:
    """Whether pid is dead (or a zombie) within deadline seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_empty_command_succeeds_without_running(tmp_path):
    result = run_hook("", str(tmp_path), {}, 1)
    assert result.ok and result.returncode is None and result.output == ""
    assert run_hook("   ", str(tmp_path), {}, 1).ok


def test_env_and_workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_OUTSIDE", "kept")
    result = run_hook('echo "$DEWY_VERSION|$DEWY_MODE|$FROM_OUTSIDE|$(pwd)"; echo oops >&2', str(tmp_path),
                      {"DEWY_VERSION": "1.2.3", "DEWY_MODE": "server"}, 10)
    assert result.ok and result.returncode == 0 and not result.timed_out
    assert result.output.splitlines() == ["1.2.3|server|kept|%s" % os.path.realpath(tmp_path), "oops"]


def test_failure(tmp_path):
    result = run_hook("echo migrating; exit 3", str(tmp_path), {}, 10)
    assert not result.ok and result.returncode == 3 and not result.timed_out
    assert result.describe() == "exit status 3: migrating"


def test_timeout_kills_the_whole_process_group(tmp_path):
    started = time.monotonic()
    result = run_hook("sleep 60 & echo $! > bg.pid; sleep 60", str(tmp_path), {}, 0.5)
    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 5
    background = int((tmp_path / "bg.pid").read_text())
    assert wait_gone(background), "the hook's background child survived the timeout"


def test_background_child_does_not_block_a_finished_hook(tmp_path):
    started = time.monotonic()
    result = run_hook("sleep 30 & echo $! > bg.pid; echo done", str(tmp_path), {}, 20)
    try:
        assert result.ok and "done" in result.output
        assert time.monotonic() - started < 5
    finally:
        os.kill(int((tmp_path / "bg.pid").read_text()), 9)


def test_output_is_capped(tmp_path):
    result = run_hook("head -c 300000 /dev/zero | tr '\\0' a", str(tmp_path), {}, 20)
    assert result.ok
    assert result.output.startswith("a" * MAX_OUTPUT)
    assert "truncated" in result.output and len(result.output) < MAX_OUTPUT + 100


def test_record_and_read(tmp_path):
    audit.record(str(tmp_path), {"mode": "server", "version": "1.0.0", "result": "deployed"})
    audit.record(str(tmp_path), {"mode": "server", "version": "1.1.0", "previous_version": "1.0.0",
                                 "result": "failed", "error": "did not start"})
    entries = audit.read(str(tmp_path))
    assert [e["version"] for e in entries] == ["1.0.0", "1.1.0"]
    first = entries[0]
    assert set(first) >= {"time", "host", "mode", "version", "previous_version", "result", "error"}
    assert first["host"] == audit.hostname() and first["error"] is None
    assert first["time"].endswith("Z")
    datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert entries[1]["previous_version"] == "1.0.0" and entries[1]["error"] == "did not start"
    path = audit.audit_path(str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as fh:
        assert all(json.loads(line) for line in fh)


def test_read_skips_damaged_lines(tmp_path):
    audit.record(str(tmp_path), {"version": "1.0.0", "result": "deployed"})
    with open(audit.audit_path(str(tmp_path)), "a") as fh:
        fh.write('{"version": "cut sho')  # a crash in the middle of a write
    assert [e["version"] for e in audit.read(str(tmp_path))] == ["1.0.0"]
    audit.record(str(tmp_path), {"version": "1.1.0", "result": "deployed"})
    assert [e["version"] for e in audit.read(str(tmp_path))] == ["1.0.0", "1.1.0"]


def test_read_without_log(tmp_path):
    assert audit.read(str(tmp_path)) == []


def test_shipped_record_uses_dewys_name_and_sentence():
    when_ns = int(datetime(2026, 11, 26, 6, 50, 12, tzinfo=timezone.utc).timestamp()) * 10**9 + 123456789
    shipped = audit.Shipped(host="web-1.example.com", mode="server", time_ns=when_ns, version="1.2.3",
                            tag="v1.2.3", previous_version="1.2.2", release_dir="/srv/app/releases/x")
    assert shipped.sentence() == "shipped to web-1.example.com server at 20261126T065012.123456789Z"
    assert shipped.filename() == "shipped_to_web-1.example.com_server_at_20261126T065012.123456789Z.txt"
    text = shipped.text()
    assert text.splitlines()[0] == shipped.sentence()
    assert "previous_version: 1.2.2" in text and "release_dir: /srv/app/releases/x" in text


def test_shipped_record_name_is_one_safe_file_name():
    shipped = audit.Shipped(host="we/ird host", mode="assets", time_ns=0, version="1.0.0", tag="1.0.0")
    assert shipped.filename() == "shipped_to_we-ird_host_assets_at_19700101T000000.000000000Z.txt"


def test_shipped_now_lowercases_the_host(monkeypatch):
    monkeypatch.setattr(audit.socket, "gethostname", lambda: "Web-1")
    assert audit.Shipped.now("server", "1.0.0", "v1.0.0").host == "web-1"
    # With host-id set, the fleet's name for the host (as in notifications and `dewy fleet`).
    assert audit.Shipped.now("server", "1.0.0", "v1.0.0", host_id="Canary-3").host == "canary-3"
    assert audit.hostname("canary-3") == "canary-3" and audit.hostname("") == "Web-1"


@pytest.mark.parametrize("result", audit.RESULTS)
def test_every_result_is_recorded(tmp_path, result):
    assert audit.record(str(tmp_path), {"result": result})["result"] == result
