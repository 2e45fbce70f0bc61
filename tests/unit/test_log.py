"""dewy.log: text and JSON lines on stderr, idempotent setup, URL redaction; dewy.clock's timestamps."""

import json
import logging
import os
import re

import pytest

from dewy import log
from dewy.clock import utc_iso

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def root_logger():
    """Restore the root logger's handlers and level after a test that calls setup()."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def stderr_lines(capsys) -> list[str]:
    """What was written to stderr since the last call, as lines."""
    return capsys.readouterr().err.splitlines()


def test_text_format(root_logger, capsys):
    log.setup("info", "text", "dewy.master")
    logging.getLogger("dewy.master").info("deployed %s", "1.2.3", extra={"generation": 4, "note": "a b"})
    (line,) = stderr_lines(capsys)
    assert re.fullmatch(r'%s INFO dewy\.master\[%d\]: deployed 1\.2\.3 generation=4 note="a b"' % (TIME, os.getpid()),
                        line), line


def test_root_records_carry_the_process_name(root_logger, capsys):
    log.setup("info", "text", "dewy.poller")
    logging.warning("careful")
    (line,) = stderr_lines(capsys)
    assert re.fullmatch(r"%s WARNING dewy\.poller\[\d+\]: careful" % TIME, line), line


def test_json_format(root_logger, capsys):
    logger = log.setup("debug", "json", "dewy.master")
    logger.debug("polled", extra={"latest": "1.2.3", "msg_count": 2})
    (line,) = stderr_lines(capsys)
    data = json.loads(line)
    assert re.fullmatch(TIME, data.pop("time"))
    assert data == {"level": "debug", "logger": "dewy.master", "pid": os.getpid(), "msg": "polled",
                    "latest": "1.2.3", "msg_count": 2}


def test_json_exceptions_stay_on_one_line(root_logger, capsys):
    logger = log.setup("info", "json", "dewy.master")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    (line,) = stderr_lines(capsys)
    data = json.loads(line)
    assert data["level"] == "error" and "RuntimeError: boom" in data["exc"]


def test_setup_is_idempotent_and_replaces_the_format(root_logger, capsys):
    log.setup("info", "text", "dewy")
    log.setup("info", "json", "dewy")
    logging.getLogger("dewy.x").info("once")
    (line,) = stderr_lines(capsys)
    assert json.loads(line)["msg"] == "once"
    assert sum(getattr(h, "_dewy", False) for h in root_logger.handlers) == 1


def test_level_filters(root_logger, capsys):
    log.setup("warning", "text", "dewy")
    logging.getLogger("dewy.x").info("hidden")
    logging.getLogger("dewy.x").error("shown")
    assert [line.split(": ", 1)[1] for line in stderr_lines(capsys)] == ["shown"]
    log.setup("warn", "text", "dewy")
    assert root_logger.level == logging.WARNING


def test_setup_refuses_unknown_level_or_format(root_logger):
    with pytest.raises(ValueError, match="log level"):
        log.setup("loud", "text", "dewy")
    with pytest.raises(ValueError, match="log format"):
        log.setup("info", "xml", "dewy")


def test_timestamp():
    assert utc_iso(0.5, millis=True) == "1970-01-01T00:00:00.500Z"
    assert utc_iso(1795675812.1239, millis=True) == "2026-11-26T06:50:12.123Z"
    assert utc_iso(1795675812.9999) == "2026-11-26T06:50:12Z"  # truncated, never the next second
    before = utc_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", before) and before <= utc_iso()


@pytest.mark.parametrize("url, expected", [
    ("https://bob:hunter2@example.com/x", "https://bob:***@example.com/x"),
    ("redis://:pa:ss@word@cache:6379/0", "redis://:***@cache:6379/0"),
    ("ghr://owner/repo?token=ghp_abc&pre-release=true", "ghr://owner/repo?token=***&pre-release=true"),
    ("slack://chan?Access_Token=xoxb-1", "slack://chan?Access_Token=***"),
    ("s3://r/b?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&artifact=a.tgz",
     "s3://r/b?X-Amz-Signature=***&X-Amz-Credential=***&artifact=a.tgz"),
    ("mail://h?password=p&secret=s&api_key=k&sig=x#frag", "mail://h?password=***&secret=***&api_key=***&sig=***#frag"),
    ("file:///srv/releases?pre-release=true&artifact=app.tar.gz", "file:///srv/releases?pre-release=true&artifact=app.tar.gz"),
    ("https://user@example.com/", "https://user@example.com/"),
    ("file", "file"),
    ("", ""),
    ("not a url at all", "not a url at all"),
])
def test_redact(url, expected):
    assert log.redact(url) == expected


def test_redact_text_finds_urls_in_messages():
    text = 'registry = "https://u:pw@h/?token=t": unsupported; see https://example.com/doc'
    assert log.redact_text(text) == 'registry = "https://u:***@h/?token=***": unsupported; see https://example.com/doc'


def test_library_debug_output_is_kept_out_even_at_debug():
    import logging

    log.setup("debug", "text", "dewy-test")
    # urllib3 logs fetched URLs (presigned, with signatures) and botocore request headers at debug.
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("dewy.poller").isEnabledFor(logging.DEBUG)


def test_context_fields_reach_text_and_json_lines_and_secrets_are_masked(root_logger, capsys, monkeypatch):
    """`with log.fields(version=...)` tags every line logged inside it; values of secret-named environment
    variables never reach a line (read at setup)."""
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-logged-by-accident")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/user/0/agent.sock")  # not a secret: auth, but no key/token
    for fmt in ("text", "json"):
        log.setup("info", fmt, "dewy.poller")
        logger = logging.getLogger("dewy.poller")
        with log.fields(version="1.2.3", generation=None):
            logger.info("token is xoxb-logged-by-accident at /run/user/0/agent.sock", extra={"generation": 7})
        logger.info("outside")
        inside, outside = stderr_lines(capsys)
        if fmt == "json":
            inside, outside = json.loads(inside), json.loads(outside)
            assert (inside["version"], inside["generation"], inside["pid"]) == ("1.2.3", 7, os.getpid())
            assert "version" not in outside
            inside = inside["msg"]
        else:
            assert inside.endswith(" version=1.2.3 generation=7") and "version=" not in outside
        assert "token is *** at /run/user/0/agent.sock" in inside


@pytest.mark.parametrize("url, secret", [
    ("s3://us-east-1/rel/web?endpoint=http://keyid:PWINURL555@127.0.0.1:18500&artifact=app.tar.gz", "PWINURL555"),
    ("s3://r/b?endpoint=http%3A%2F%2Fkey%3Apw12345%40h%3A9&x=1", "pw12345"),
])
def test_a_url_inside_the_query_is_redacted_too(url, secret):
    redacted = log.redact(url)
    assert secret not in redacted and "***" in redacted
    assert "artifact=app.tar.gz" in redacted or "x=1" in redacted  # the rest stays readable


# --- the journal: syslog priority prefixes when JOURNAL_STREAM names stderr -----------------------------------

_JOURNAL_SCRIPT = """
import logging
from dewy import log
logger = log.setup("debug", "%s", "dewy.master")
logger.error("it broke")
logger.warning("careful")
logger.info("hello", extra={"version": "1.2.3"})
logger.debug("details")
try:
    raise ValueError("bad")
except ValueError:
    logger.exception("with a traceback")
"""


def _log_through_pipe(fmt: str, journal_of_pipe: bool) -> list:
    """The stderr lines of a process logging one record a level, its fd 2 a pipe that JOURNAL_STREAM names (or not)."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    stream = "%d:%d" % (st.st_dev, st.st_ino) if journal_of_pipe else "%d:%d" % (st.st_dev, st.st_ino + 1)
    try:
        subprocess.run([sys.executable, "-c", _JOURNAL_SCRIPT % fmt], stderr=write_end, check=True, timeout=60,
                       env=dict(os.environ, JOURNAL_STREAM=stream))
    finally:
        os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as fh:
        return fh.read().splitlines()


def test_on_the_journal_lines_carry_their_syslog_priority_and_no_timestamp():
    lines = _log_through_pipe("text", journal_of_pipe=True)
    pid = lines[0].partition("[")[2].partition("]")[0]
    assert lines[:4] == [
        "<3>ERROR dewy.master[%s]: it broke" % pid,
        "<4>WARNING dewy.master[%s]: careful" % pid,
        "<6>INFO dewy.master[%s]: hello version=1.2.3" % pid,
        "<7>DEBUG dewy.master[%s]: details" % pid,
    ]
    # Every line of a traceback keeps the record's priority (journald reads each line as an entry).
    assert lines[4].startswith("<3>ERROR") and len(lines) > 5
    assert all(line.startswith("<3>") for line in lines[4:]), lines[4:]
    json_lines = _log_through_pipe("json", journal_of_pipe=True)
    assert json_lines[0].startswith('<3>{"time":') and json_lines[3].startswith("<7>{")


def test_a_journal_stream_that_is_not_stderr_changes_nothing():
    """A child whose stderr goes elsewhere inherits JOURNAL_STREAM: only the stream itself counts."""
    lines = _log_through_pipe("text", journal_of_pipe=False)
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ERROR dewy\.master\[\d+\]: it broke$", lines[0]), lines[0]
    assert not any(line.startswith("<") for line in lines)
