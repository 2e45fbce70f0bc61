"""dewy.master.output: an app's stderr forwarded without blocking, its tail kept for refusal reasons."""

import os
import subprocess
import sys

import pytest

from dewy.master import output


@pytest.fixture
def devnull():
    """A descriptor to forward to when the forwarded bytes do not matter."""
    fd = os.open(os.devnull, os.O_WRONLY)
    yield fd
    os.close(fd)


def test_forwards_everything_and_keeps_only_the_tail(tmp_path):
    forward = open(tmp_path / "master-stderr", "wb")
    tail, w = output.StderrTail.pipe(forward.fileno())
    data = b"".join(b"line %05d\n" % i for i in range(2000))  # 22 kB, more than the tail keeps
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.buffer.write(sys.stdin.buffer.read())"],
                             stdin=subprocess.PIPE, stderr=w)
    os.close(w)
    child.communicate(data, timeout=20)
    while tail.read():
        pass  # a test may block; the master only reads when its selector says so
    forward.close()
    assert (tmp_path / "master-stderr").read_bytes() == data
    assert len(tail.tail) == output.TAIL_BYTES and data.endswith(bytes(tail.tail))
    assert tail.closed


def test_read_never_blocks_on_a_quiet_pipe(devnull):
    tail, w = output.StderrTail.pipe(devnull)
    assert tail.read() is True  # nothing there yet: returns at once, still open
    os.write(w, b"Traceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'flask'\n")
    assert tail.read() is True
    assert tail.reason() == "Traceback (most recent call last): | File x | ModuleNotFoundError: No module named 'flask'"
    os.close(w)
    assert tail.read() is False and tail.closed


def test_reason_is_one_bounded_line_ending_with_the_last_words(devnull):
    tail, w = output.StderrTail.pipe(devnull)
    os.write(w, b"x" * 3000 + b"\nfatal: port busy\n")
    os.close(w)
    tail.read()
    reason = tail.reason(limit=100)
    assert len(reason) <= 100 and reason.endswith("fatal: port busy") and "\n" not in reason
    assert output.with_reason("exited with code 1", tail).startswith("exited with code 1; stderr: ")
    assert output.with_reason("exited with code 1", None) == "exited with code 1"


def test_json_log_format_turns_app_lines_into_records():
    import json

    r, w = os.pipe()
    tail, write_end = output.StderrTail.pipe(forward_fd=w)
    tail.as_json = {"app_pid": 42, "generation": 3, "version": "1.2.0"}
    os.write(write_end, b"first line\nsecond ")
    tail.read()
    os.write(write_end, b"half\nno newline at the end")
    os.close(write_end)
    while tail.read():
        pass
    os.close(w)
    records = [json.loads(line) for line in os.read(r, 65536).decode().splitlines()]
    os.close(r)
    assert [rec["msg"] for rec in records] == ["first line", "second half", "no newline at the end"]
    assert all(rec["logger"] == "app" and rec["generation"] == 3 and rec["version"] == "1.2.0" for rec in records)


def test_a_refusal_reason_masks_urls_and_secret_environment_values(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "dbpw99999")
    devnull = os.open(os.devnull, os.O_WRONLY)
    tail, write_end = output.StderrTail.pipe(forward_fd=devnull)
    os.write(write_end, b"cannot connect to postgres://app:hunter2@db/prod with dbpw99999\n")
    os.close(write_end)
    reason = output.with_reason("exited with code 1", tail)
    tail.close()
    os.close(devnull)
    assert "hunter2" not in reason and "dbpw99999" not in reason and "postgres://app:***@db/prod" in reason


@pytest.mark.parametrize("as_json", [False, True])
def test_secrets_dewy_knows_are_masked_in_what_reaches_the_journal(tmp_path, monkeypatch, as_json):
    """An app printing a connection string or its environment: the values of dewy's credential variables
    (and of secret-named ones) are masked, even when the app's writes split them."""
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-very-secret-token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/etc/dewy/gcs-key.json")
    forward = open(tmp_path / "master-stderr", "wb")
    tail, w = output.StderrTail.pipe(forward.fileno())
    if as_json:
        tail.as_json = {"pid": 1}
    script = ("import sys, time\n"
              "sys.stderr.write('connecting with xoxb-very-'); sys.stderr.flush(); time.sleep(0.2)\n"
              "sys.stderr.write('secret-token to slack\\nkey /etc/dewy/gcs-key.json\\nlast')\n")
    child = subprocess.Popen([sys.executable, "-c", script], stderr=w)
    os.close(w)
    while tail.read():
        pass
    child.wait(20)
    tail.close()
    forward.close()
    text = (tmp_path / "master-stderr").read_text()
    assert "very-secret" not in text and "gcs-key.json" not in text, text
    assert "connecting with *** to slack" in text and "last" in text, text
