"""The "Config" row of the fault matrix (issue 10): property-based tests over ini files and flag sets.

Whatever the file or the command line holds, `dewy-master -c INI --check` and `dewy server|assets FLAGS`
end in exactly one of two ways: a valid configuration (exit 0, "OK"), or exit 2 with a clear error whose
every line is one `dewy-master: ...` / `dewy: ...` line - never a traceback. The generated inputs mix
the real keys and flags with good values, near misses (bad units, huge numbers, URLs with bad query keys,
control characters) and junk (random text, invalid UTF-8, stray sections, continuation lines, a BOM).

In-process for speed: `dewy.cli.master_main` is what the `dewy-master` script runs for `--check`; for flag
sets, docopt's parse and `Config` construction are what `dewy server|assets` does before it starts the
master (it has no --check). A few fixed cases also go through the real `dewy-master --check` process.
The profile is bounded: a few hundred examples in all, a per-example deadline, no example database.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dewy import cli
from dewy.config import SETTINGS, ConfigError, from_options

# Bounded: ~150 ini files + ~150 flag sets, each well under a second; no example database (hypothesis keeps
# only its caches in ./.hypothesis/, which ignores itself in git).
settings.register_profile("dewy-config-fuzz", max_examples=150, deadline=timedelta(seconds=5), database=None,
                          suppress_health_check=[HealthCheck.too_slow], derandomize=False)
PROFILE = settings.get_profile("dewy-config-fuzz")


NAMES = [s.name for s in SETTINGS]
UNKNOWN = ["registery", "intervall", "port_", "Registry", "x", "[dewy]", "app ", "DEFAULT"]

# Values near each key's meaning: valid ones, near misses and hostile ones.
GOOD_AND_NEAR = {
    "mode": ["server", "assets", "Server", "both", ""],
    "registry": ["file:///srv/releases", "file:///srv/releases?artifact=app.tar.gz&pre-release=true",
                 "ghr://linyows/dewy", "s3://us-east-1/bucket/releases?endpoint=http://127.0.0.1:9",
                 "gs://bucket/releases", "grpc://127.0.0.1:9000?no-tls=true", "file://relative/path",
                 "file:///srv?artifact=../x", "file:///srv?artifact=a%0Ab", "file:///srv?pre-release=maybe",
                 "file:///srv?calver=YYYY.0M.MICRO", "file:///srv?calver=%%", "file:///srv?unknown=1",
                 "grpc://h:99999", "grpc://user:pw@h:1", "grpc://h:1?ca=relative.pem", "s3://", "gs://",
                 "ghr://", "ghr://owner", "ghr://o/r/extra", "http://example.com", "ftp://x", "://", "%zz",
                 "s3://us-east-1/b?endpoint=ftp://x", "file:///srv?artifact=", "grpc://[::1]:1?no-tls=1",
                 "file:///srv/r?artifact=a.tgz  # ours", "file:///srv/r ;x", "file:///srv/r   ?artifact=a.tgz",
                 "file:///srv/my releases", "file?artifact=a.tgz", '"file:///srv/r"'],
    "port": ["8000", "127.0.0.1:8000", "[::1]:8000", "8000-8002", "unix:/tmp/x.sock", "0", "65536",
             "8000-7000", "1-100000", "abc", "127.0.0.1:", ":", "[::1", "unix:", "8000,8000", "8000 8001",
             "8000, 127.0.0.1:8000", "[::]:80 [::1]:80", "tcp://127.0.0.1:8000", "9464"],
    "interval": ["10s", "500ms", "1m30s", "0", "-1s", "1e9", "10x", "nan", "inf", "99999999999999h", ".5", "1ms",
                 "0.1"],
    "log-level": ["debug", "INFO", "warn", "error", "trace", ""],
    "log-format": ["text", "json", "xml"],
    "cache": ["file", "file:///var/cache/dewy", "file://rel", "redis://127.0.0.1:6379/0", "redis://h:x",
              "consul://127.0.0.1:8500", "memory", "s3://us-east-1/b/p?registry-ttl=5s", "s3://", "bogus://",
              "file?registry-ttl=30s", "file:///dev/null/cache", "file:///var/cache/dewy # local"],
    "notifier": ["", "slack://#deploys", "mail://x", "https://hooks.example.com/x", "http://example.com/x",
                 "log", "bogus://", "slack://", ",,,", "https://h/x,https://h/y"],
    "before-deploy-hook": ["echo hi", "", "exit 1", "$(true)"],
    "slot": ["blue", "green", "", "a b", "a+b", "ü"],
    "app": ["python3 app.py", "./current/app", "current/bin/server --flag", "'unbalanced", "", "/nonexistent/x",
            "sh -c 'exit 0'"],
    "workdir": [".", "work", "/nonexistent/deeper/x", "/dev/null", "", "rel/../x", '"w q"', "'w'", "w q"],
    "ready": ["delay:1s", "notify", "notify:5s", "http:/healthz", "http:/h:2s", "http:", "delay", "delay:x",
              "tcp:1s", "http:healthz", "http://127.0.0.1/healthz", "https://localhost:1/x:2s"],
    "health": ["", "http:/healthz", "/healthz", "http:", "tcp:/x", "http://localhost/healthz"],
    "health-failures": ["3", "0", "-1", "1.5", "x", "999999999999999999999"],
    "trigger": ["", "127.0.0.1:9000", "0.0.0.0:1", "9000", "h:", "[::1]:80"],
    "graceful-timeout": ["30s", "0", "x"],
    "stop-signal": ["TERM", "SIGTERM", "quit", "USR1", "9", "KILL", "BOGUS", "0", "64", "-1"],
    "keep-releases": ["7", "1", "0", "-3", "x", "1e3"],
    "max-release-size": ["2GiB", "500MB", "256MiB", "1024", "0", "-1", "1.5GiB", "2XB", "", "99999999999999999TiB"],
    "max-release-files": ["100000", "1", "0", "-5", "x"],
    "backlog": ["1024", "0", "x", "99999999999"],
    "dir": ["", "/srv/www", "relative", "/"],
    "hook-timeout": ["5m", "0", "x"],
    "verify-checksum": ["auto", "required", "off", "on", ""],
    "poll-backoff-max": ["5m", "1s", "0", "x"],
    "metrics": ["", "127.0.0.1:9100", "9100", "x:y", "0.0.0.0:99999", ":8000", "127.0.0.1:8000"],
    "rollout-waves": ["", "10%,50%,100%", "1,2,3", "x", "150%"],
    "rollout-soak": ["5m", "x"],
    "user": ["", "root", "nobody", "0", "no-such-user-dewy", "a b"],
    "group": ["", "root", "nogroup", "0", "no-such-group-dewy"],
}
HOSTILE_TEXT = ["", " ", "\t", "%", "%(x)s", "${x}", "\x00", "\x1b[31m", "é", "\u202e", "a" * 300, "0x10", "1_000",
                "true", "none", "[dewy]", "= =", ";comment", "#comment", "\\", "'", '"']

value_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def values_for(name: str):
    """A strategy of raw values for the setting name (its near misses, hostile text, random text)."""
    return st.one_of(st.sampled_from(GOOD_AND_NEAR.get(name, ["x"]) + HOSTILE_TEXT), value_text)


@st.composite
def ini_files(draw) -> bytes:
    """The bytes of an ini file: mostly a [dewy] section of real keys, sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))  # invalid UTF-8, NULs, anything
    lines = []
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["[dewy]", "[dewy]", "[dewy]", "[DEWY]", "[other]", "[DEFAULT]",
                                           "[dewy", "dewy]", "", "[]"])))
    else:
        lines.append("[dewy]")
    base = {"registry": "file:///srv/releases", "app": "python3 app.py", "workdir": "work"}
    keys = draw(st.lists(st.sampled_from(NAMES + UNKNOWN), max_size=8))
    if draw(st.booleans()):
        keys = list(base) + keys  # a mostly valid file with a few changes: reaches the deeper checks
    for key in keys:
        value = draw(values_for(key)) if key not in base or draw(st.booleans()) else base[key]
        sep = draw(st.sampled_from([" = ", "=", ": ", " =", " "]))
        lines.append("%s%s%s" % (key, sep, value))
        if draw(st.integers(0, 7)) == 0:
            lines.append(draw(st.sampled_from(["  continued", "\tmore", "# comment", "; comment", "", "[dewy]",
                                               "   ", "[x]", "=", "key"])))
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))
    if draw(st.integers(0, 9)) == 0:
        text = "\ufeff" + text
    return text.encode("utf-8", "surrogatepass")


def run_quietly(fn, *args) -> tuple:
    """(return value, stdout, stderr) of fn(*args); any exception but SystemExit propagates (a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = fn(*args)
        except SystemExit as exc:  # docopt's --help/--version path; no other exit is expected
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def assert_clear_error(rc, stdout: str, stderr: str, prog: str, source) -> None:
    """Exit 0 with OK, or exit 2 with each stderr line one `prog: ...` message; never a traceback."""
    assert "Traceback" not in stdout + stderr, (source, stderr)
    if rc == 0:
        assert stdout.rstrip().endswith("OK"), (source, stdout, stderr)
        return
    assert rc == 2, (rc, source, stdout, stderr)
    lines = stderr.splitlines()
    assert lines, (source, "exit 2 without a message")
    for line in lines:
        assert line.startswith(prog + ": "), (source, stderr)
        assert 20 < len(line) < 2000, (source, line)


@PROFILE
@given(data=ini_files())
def test_any_ini_file_is_a_valid_config_or_one_clear_line_and_exit_2(data):
    with tempfile.TemporaryDirectory(prefix="fuzz-ini-") as tmp:
        path = os.path.join(tmp, "dewy.ini")
        with open(path, "wb") as fh:
            fh.write(data)
        os.makedirs(os.path.join(tmp, "work"), exist_ok=True)
        rc, out, err = run_quietly(cli.master_main, ["-c", path, "--check"])
        assert_clear_error(rc, out, err, "dewy-master", data)
        if rc == 2 and not err.startswith("dewy-master: " + path):
            # Every error names the file it is about (the workdir/app checks name the ini too).
            assert path in err or "[dewy]" in err, err


FLAGS = [s for s in SETTINGS if s.flag]


@st.composite
def flag_sets(draw) -> list:
    """`dewy server|assets` argv: known flags (long, short, --flag=value), some unknown, the app after --."""
    argv = [draw(st.sampled_from(["server", "assets"]))]
    if draw(st.integers(0, 3)):
        argv += ["--registry", draw(values_for("registry")) if draw(st.booleans()) else "file:///srv/releases"]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            argv.append(draw(st.sampled_from(["--bogus", "-x", "--", "-", "--registry", "--port=", "-p"])))
            continue
        s = draw(st.sampled_from(FLAGS))
        value = draw(values_for(s.name))
        flag = s.short if s.short and draw(st.booleans()) else s.flag
        if flag.startswith("--") and draw(st.integers(0, 3)) == 0:
            argv.append("%s=%s" % (flag, value))
        else:
            argv += [flag, value]
    if argv[0] == "server" and draw(st.integers(0, 4)):
        argv += ["--"] + draw(st.lists(st.sampled_from(["python3", "app.py", "--flag", "", "-p", "8000"]),
                                       min_size=1, max_size=3))
    return argv


def configure(argv: list) -> int:
    """What `dewy server|assets` does before it starts the master: parse, build the Config; exit code."""
    args = cli._parse(argv[0], argv)
    if isinstance(args, int):
        return args
    try:
        from_options(cli.options_from_args(args), base_dir=os.getcwd())
    except ConfigError as exc:
        print("dewy: %s" % exc, file=sys.stderr)
        return 2
    print("OK")
    return 0


@PROFILE
@given(argv=flag_sets())
def test_any_flag_set_is_a_valid_config_or_a_clear_error_and_exit_2(argv):
    rc, out, err = run_quietly(configure, argv)
    assert "Traceback" not in out + err, (argv, err)
    if rc == 0:
        return
    assert rc == 2, (rc, argv, err)
    first = err.splitlines()[0] if err else ""
    # A bad value: one line. A usage error: its one line, then the usage text it shows.
    assert first.startswith("dewy: ") and 10 < len(first) < 2000, (argv, err)
    if "\nUsage:" not in err:
        assert len(err.splitlines()) == 1, (argv, err)


def test_every_error_of_load_ini_is_one_line_naming_the_file(tmp_path):
    """The near misses of every key, one at a time, in an otherwise valid file: each error is one line."""
    seen = 0
    for name, values in GOOD_AND_NEAR.items():
        for value in values + HOSTILE_TEXT:
            ini = tmp_path / "dewy.ini"
            settings_ = {"registry": "file:///srv/releases", "app": "python3 app.py", "workdir": str(tmp_path)}
            settings_[name] = value
            ini.write_text("[dewy]\n" + "".join("%s = %s\n" % kv for kv in settings_.items()), encoding="utf-8")
            rc, out, err = run_quietly(cli.master_main, ["-c", str(ini), "--check"])
            assert_clear_error(rc, out, err, "dewy-master", (name, value))
            seen += rc == 2
    assert seen > 100, "the near misses should mostly be refused"


@pytest.mark.parametrize("content,expect", [
    (b"\xff\xfe[dewy]\nregistry = file:///x\n", "not UTF-8"),
    (b"[dewy]\nregistery = file:///srv\n", "registery"),
    (b"[dewy]\nregistry = file:///srv?artifact=a%0Ab\napp = x\n", "artifact"),
    (b"[dewy]\nregistry = file:///srv\napp = python3 app.py\ninterval = 1e400\n", "interval"),
])
def test_the_real_dewy_master_check_exits_2_with_one_line(tmp_path, content, expect):
    ini = tmp_path / "dewy.ini"
    ini.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "dewy.master", "-c", str(ini), "--check"], capture_output=True,
                          text=True, timeout=60, cwd=str(tmp_path))
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert expect in done.stderr and str(ini) in done.stderr, done.stderr
