"""dewy.cli: usage generated from SETTINGS, exit 2 with the documented message for every bad value (run as
real subprocesses: `python -m dewy ...` and `dewy-master -c`), `--check`, and `dewy status`."""

import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from docopt import docopt

from dewy import __version__, cli, config, statefiles as status
from dewy.config import from_options

from .test_config import BASE, INI_ERRORS, REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASTER = [sys.executable, "-c", "import sys; from dewy.cli import master_main; sys.exit(master_main())"]
DEWY = [sys.executable, "-m", "dewy"]


def run_all(commands: list[tuple[list[str], str]]) -> list[subprocess.CompletedProcess]:
    """Run (argv, cwd) pairs at the same time (each python start-up costs ~0.1 s) and collect the results."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [(argv, subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)) for argv, cwd in commands]
    results = []
    for argv, proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


# --- every bad ini through `dewy-master -c` ------------------------------------------------------

# One case of each kind of mistake (each setting's bad value, unknown key, missing key, each file-level
# problem); the variants of a kind are covered in-process by test_config, which shares the code path.
MASTER_KINDS = ["bad-duration", "negative-duration", "zero-hook-timeout", "tiny-health-interval", "unknown-key", "bad-scheme",
                "missing-registry", "bad-cache", "bad-notifier", "port-range", "log-level", "log-format", "ready",
                "stop-signal", "keep-releases", "backlog", "slot", "mode", "missing-app", "app-in-assets",
                "empty-workdir", "duplicate-key", "missing-section", "no-section", "key-before-section",
                "parse-error", "continued-app", "credentials"]
MASTER_CASES = [case for case in INI_ERRORS if case[0] in MASTER_KINDS]


def test_master_kinds_exist():
    assert len(MASTER_CASES) == len(MASTER_KINDS)


@pytest.fixture(scope="module")
def master_results(tmp_path_factory):
    """case id -> (ini path, directory, result of `dewy-master -c INI`) for every MASTER_CASES case, in parallel."""
    cases = []
    for case_id, text, _ in MASTER_CASES:
        directory = tmp_path_factory.mktemp(case_id)
        path = directory / "dewy.ini"
        path.write_text(text)
        cases.append((case_id, str(path), directory))
    results = run_all([(MASTER + ["-c", path], str(directory)) for _, path, directory in cases])
    return {case_id: (path, directory, result) for (case_id, path, directory), result in zip(cases, results)}


@pytest.mark.parametrize("case_id, expected", [(c[0], c[2]) for c in MASTER_CASES], ids=[c[0] for c in MASTER_CASES])
def test_dewy_master_exits_2_with_the_message_and_starts_nothing(master_results, case_id, expected):
    path, directory, result = master_results[case_id]
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("dewy-master: %s: %s" % (path, expected)), line
    assert os.listdir(directory) == ["dewy.ini"]  # no .dewy/, releases/, sockets: nothing started


def test_dewy_master_check(tmp_path):
    good = tmp_path / "good.ini"
    good.write_text(BASE + "port = 8000-8001\nworkdir = w\n")
    bad = tmp_path / "bad.ini"
    bad.write_text(BASE + "interval = ten\n")
    script = shutil.which("dewy-master")
    launcher = [script] if script else MASTER
    ok, not_ok, missing = run_all([(launcher + ["-c", str(good), "--check"], str(tmp_path)),
                                   (MASTER + ["-c", "bad.ini", "--check"], str(tmp_path)),
                                   (MASTER + ["--check", "-c", "nope.ini"], str(tmp_path))])
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "dewy-master: %s: OK\n" % good, "")
    assert not_ok.returncode == 2
    assert not_ok.stderr == ('dewy-master: bad.ini: [dewy] interval = "ten": '
                             'expected a duration such as 500ms, 10s, 1m or plain seconds\n')
    assert missing.returncode == 2
    assert missing.stderr == "dewy-master: nope.ini: cannot read: No such file or directory\n"
    assert sorted(os.listdir(tmp_path)) == ["bad.ini", "good.ini"]


def test_dewy_master_usage_errors(capsys):
    assert cli.master_main([]) == 2
    assert "Usage:\n  dewy-master -c INI [--check]" in capsys.readouterr().err
    assert cli.master_main(["-c"]) == 2
    assert capsys.readouterr().err.startswith("dewy-master: -c requires argument\n")
    assert cli.master_main(["-c", "x.ini", "--bogus"]) == 2
    assert capsys.readouterr().err.startswith("dewy-master: unexpected --bogus\n")
    assert cli.master_main(["--version"]) == 0
    assert capsys.readouterr().out == "dewy-master %s\n" % __version__
    assert cli.master_main(["--help"]) == 0
    assert "--check" in capsys.readouterr().out


# --- every bad flag through `python -m dewy` ------------------------------------------------------

R = REGISTRY
CLI_ERRORS = [
    ("interval", ["server", "--registry", R, "-i", "ten", "--", "app"],
     'dewy: command line: --interval = "ten": expected a duration such as 500ms, 10s, 1m or plain seconds'),
    ("port", ["server", "--registry", R, "-p", "8000", "-p", "70000", "--", "app"],
     'dewy: command line: --port = "70000": port 70000 is out of range 1..65535'),
    ("registry-scheme", ["assets", "--registry", "ftp://x"],
     'dewy: command line: --registry = "ftp://x": unsupported scheme "ftp"; supported: '),
    ("registry-missing", ["server", "--", "app"], "dewy: command line: --registry is required"),
    ("log-level", ["server", "--registry", R, "-l", "loud", "--", "app"],
     'dewy: command line: --log-level = "loud": expected one of: debug, info, warning, error'),
    ("log-format", ["server", "--registry", R, "-f", "xml", "--", "app"],
     'dewy: command line: --log-format = "xml": expected one of: text, json'),
    ("cache", ["server", "--registry", R, "-c", "nosuch://x", "--", "app"],
     'dewy: command line: --cache = "nosuch://x": unsupported scheme "nosuch"'),
    ("notifier", ["server", "--registry", R, "--notifier", "nosuch://x", "--", "app"],
     'dewy: command line: --notifier = "nosuch://x": unsupported scheme "nosuch"'),
    ("slot", ["server", "--registry", R, "-s", "a b", "--", "app"],
     'dewy: command line: --slot = "a b": expected semver build metadata'),
    ("workdir", ["server", "--registry", R, "--workdir", "", "--", "app"],
     'dewy: command line: --workdir = "": expected a directory path'),
    ("ready", ["server", "--registry", R, "--ready", "soon", "--", "app"],
     'dewy: command line: --ready = "soon": expected delay, delay:DURATION, notify, notify:TIMEOUT or '
     'http:/PATH[:TIMEOUT]'),
    ("graceful-timeout", ["server", "--registry", R, "--graceful-timeout", "1d", "--", "app"],
     'dewy: command line: --graceful-timeout = "1d": expected a duration'),
    ("stop-signal", ["server", "--registry", R, "--stop-signal", "STOP", "--", "app"],
     'dewy: command line: --stop-signal = "STOP": expected a signal name or number'),
    ("keep-releases", ["server", "--registry", R, "--keep-releases", "0", "--", "app"],
     'dewy: command line: --keep-releases = "0": expected a whole number >= 1'),
    ("backlog", ["server", "--registry", R, "--backlog", "-1", "--", "app"],
     'dewy: command line: --backlog = "-1": expected a whole number 1..65535'),
    ("hook-timeout", ["server", "--registry", R, "--hook-timeout", "0", "--", "app"],
     'dewy: command line: --hook-timeout = "0": expected a duration of at least 100ms'),
    ("credentials", ["assets", "--registry", "ftps://u:hunter2@h/?token=t0k"],
     'dewy: command line: --registry = "ftps://u:***@h/?token=***": unsupported scheme "ftps"'),
    # usage errors: the usage follows the message
    ("no-app", ["server", "--registry", R], "dewy: the app's command is missing"),
    ("unknown-flag", ["server", "--bogus", "--", "app"], "dewy: unexpected --bogus"),
    ("flag-without-value", ["server", "-i"], "dewy: -i requires argument"),
    ("unknown-command", ["deploy"], 'dewy: unknown command "deploy"'),
    ("no-command", [], "Usage:"),
    ("status-exclusive", ["status", "--workdir", "a", "--config", "b"], "dewy: unexpected --config"),
]


@pytest.fixture(scope="module")
def dewy_results(tmp_path_factory):
    """case id -> (cwd, result of `python -m dewy ARGV`) for every CLI_ERRORS case, run in parallel."""
    dirs = [tmp_path_factory.mktemp("cli-" + case_id) for case_id, _, _ in CLI_ERRORS]
    results = run_all([(DEWY + argv, str(d)) for (_, argv, _), d in zip(CLI_ERRORS, dirs)])
    return {case[0]: (d, r) for case, d, r in zip(CLI_ERRORS, dirs, results)}


@pytest.mark.parametrize("case_id, expected", [(c[0], c[2]) for c in CLI_ERRORS], ids=[c[0] for c in CLI_ERRORS])
def test_dewy_exits_2_with_the_message_and_starts_nothing(dewy_results, case_id, expected):
    directory, result = dewy_results[case_id]
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith(expected), result.stderr
    if expected.startswith("dewy: command line:"):
        assert len(lines) == 1  # a config error is one line, no usage
    assert "hunter2" not in result.stderr and "t0k" not in result.stderr
    assert os.listdir(directory) == []


def test_usage_errors_show_the_usage(dewy_results):
    for case_id in ("no-app", "unknown-flag", "unknown-command", "no-command"):
        assert "Usage:\n  dewy server [options] [--] CMD [ARG...]\n" in dewy_results[case_id][1].stderr


# --- the usage is generated from SETTINGS ---------------------------------------------------------

def test_help_lists_every_setting_flag(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for s in config.SETTINGS:
        if s.flag:
            assert "%s %s" % (s.flag, s.meta) in text, s.name
        if s.short:
            assert "%s %s, %s %s" % (s.short, s.meta, s.flag, s.meta) in text, s.name
    for line in cli.COMMANDS.values():
        assert "  " + line + "\n" in text
    assert "(default: 10s)" in text and "(default: required)" in text


def test_every_setting_but_mode_and_app_has_the_long_flag_of_its_ini_key():
    for s in config.SETTINGS:
        # otlp-insecure is Dewy's switch --otlp-insecure (dewy.dewyflags), no flag with a value
        assert s.flag == (None if s.name in ("mode", "app", "container-args", "otlp-insecure") else "--" + s.name)
    shorts = {s.short: s.name for s in config.SETTINGS if s.short}
    assert shorts == {"-p": "port", "-i": "interval", "-l": "log-level", "-f": "log-format", "-c": "cache",
                      "-s": "slot", "-d": "dir"}


def test_help_and_version(capsys):
    assert cli.main(["server", "-h"]) == 0
    assert "Usage:" in capsys.readouterr().out
    for argv in (["--version"], ["-v"], ["server", "-v"], ["assets", "--registry", R, "--version"]):
        assert cli.main(argv) == 0
        assert capsys.readouterr().out == "dewy version: %s [unknown, unknown]\n" % __version__  # Dewy's form
    assert cli.main(["server", "-f", "json", "-v"]) == 0  # Dewy: a JSON log record on stderr instead
    out = capsys.readouterr()
    record = json.loads(out.err)
    assert out.out == "" and (record["msg"], record["version"], record["level"]) == ("Dewy version", __version__,
                                                                                     "INFO")
    assert not cli._wants_help(["server", "--registry", R, "--", "app", "-h"])  # -h belongs to the app


def parse(argv: list[str], cwd: str = "/"):
    """argv parsed like `dewy` does, turned into a Config."""
    args = docopt(cli.command_doc(argv[0]), argv, default_help=False)
    return from_options(cli.options_from_args(args), base_dir=cwd)


def test_every_flag_reaches_the_config():
    cfg = parse(["server", "--registry", R, "-p", "8000", "--port=127.0.0.1:8001-8002", "-p", "unix:/tmp/a.sock",
                 "-i", "500ms", "-l", "debug", "-f", "json", "-c", "memory", "--notifier", "log://",
                 "--before-deploy-hook", "echo before", "--after-deploy-hook", "echo after", "-s", "blue",
                 "--workdir", "srv", "--ready", "notify:20s", "--graceful-timeout", "3s", "--stop-signal", "QUIT",
                 "--keep-releases", "2", "--backlog", "64", "--dir", "www", "--hook-timeout", "1m",
                 "--verify-checksum", "required", "--poll-backoff-max", "2m", "--metrics", "127.0.0.1:9464",
                 "--health", "http:/healthz", "--health-interval", "5s", "--health-failures", "2",
                 "--rollout-soak", "1m", "--host-id", "web-1",
                 "--", "bin/app", "--port", "-x"], cwd="/base")
    assert cfg == config.Config(
        mode="server", registry=R, port=("8000", "127.0.0.1:8001", "127.0.0.1:8002", "unix:/tmp/a.sock"),
        interval=0.5, log_level="debug", log_format="json", cache="memory", notifier="log://",
        before_deploy_hook="echo before", after_deploy_hook="echo after", slot="blue",
        app=("/base/srv/bin/app", "--port", "-x"), workdir="/base/srv", ready=config.Ready("notify", 20.0),
        graceful_timeout=3.0, stop_signal=3, keep_releases=2, backlog=64, dir="/base/www", hook_timeout=60.0,
        verify_checksum="required", poll_backoff_max=120.0, metrics="127.0.0.1:9464", health="/healthz",
        after_rollback_hook="", rollback="on", otlp_endpoint="", otlp_insecure="false",
        health_interval=5.0, health_failures=2, trigger="", trigger_token="", trigger_secret="",
        max_release_size=2 * 1024 ** 3, max_release_files=100000, rollout_waves=(), rollout_soak=60.0,
        host_id="web-1", user="", group="", app_env_keep=(), name="", replicas=1, health_path="", health_timeout=30.0,
        drain_time=30.0, runtime="docker", cmd=(), proxy_idle_timeout=300.0, container_args=(), source="command line")


def test_short_flags_with_attached_values_and_assets():
    cfg = parse(["assets", "--registry", R, "-i0.25", "-lwarn", "--dir", "/var/www"])
    assert (cfg.mode, cfg.interval, cfg.log_level, cfg.app, cfg.dir) == ("assets", 0.25, "warning", (), "/var/www")


def test_flags_may_follow_the_command_in_any_order():
    cfg = parse(["server", "-p", "8000", "--registry", R, "-p", "8001", "--", "app"])
    assert cfg.port == ("8000", "8001")


# --- dewy status ----------------------------------------------------------------------------------

def now_iso(offset: float = 0.0) -> str:
    """An ISO 8601 UTC time offset seconds from now."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    return moment.isoformat().replace("+00:00", "Z")


def sample_status(pid: int, started_at: str) -> dict:
    """A status file as the master writes it."""
    return {"pid": pid, "mode": "server", "state": "running", "version": "1.2.3", "release_dir": "/w/releases/x",
            "generation": 4, "app_pids": [101, 102], "retiring_pids": [], "poller_pid": 99,
            "last_poll": "2026-11-26T06:50:12Z", "latest_version": "1.2.4", "last_error": "download failed",
            "last_deploy": {"version": "1.2.4", "ok": False, "error": "not ready", "time": "2026-11-26T06:50:00Z"},
            "started_at": started_at, "updated_at": now_iso(), "dewy_version": __version__}


def test_status_of_a_running_master(tmp_path, capsys):
    status.write(str(tmp_path), sample_status(os.getpid(), now_iso()))
    assert cli.main(["status", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "running (master pid %d)" % os.getpid() in out
    for text in ("1.2.3", "generation     4", "101 102", "(latest 1.2.4)", "download failed",
                 "1.2.4 FAILED at 2026-11-26T06:50:00Z: not ready"):
        assert text in out


def test_status_json_is_the_file(tmp_path, capsys):
    data = sample_status(os.getpid(), now_iso())
    status.write(str(tmp_path), data)
    assert cli.main(["status", "--workdir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == data


def test_status_of_a_dead_master_is_stale(tmp_path, capsys):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    status.write(str(tmp_path), sample_status(proc.pid, now_iso(-1)))
    assert cli.main(["status", "--workdir", str(tmp_path)]) == 3
    assert "not running (stale status from pid %d)" % proc.pid in capsys.readouterr().out


def test_status_of_a_reused_pid_is_stale(tmp_path, capsys):
    # This process is alive but younger than the status claims its master is: the pid was reused.
    status.write(str(tmp_path), sample_status(os.getpid(), "2001-01-01T00:00:00Z"))
    assert cli.main(["status", "--workdir", str(tmp_path)]) == 3
    assert "not running (stale status from pid %d)" % os.getpid() in capsys.readouterr().out
    assert cli.master_alive({"pid": os.getpid(), "started_at": time.time() - 3600}) is False
    assert cli.master_alive({"pid": os.getpid(), "started_at": time.time()}) is True
    assert cli.master_alive({"pid": None}) is False


def test_status_without_a_status_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dewy: no status in %s: no dewy master has run there" % tmp_path)
    assert os.listdir(tmp_path) == []


def test_status_takes_the_workdir_from_the_ini(tmp_path, capsys):
    (tmp_path / "etc").mkdir()
    ini = tmp_path / "etc" / "dewy.ini"
    ini.write_text(BASE + "workdir = ../srv\n")
    status.write(str(tmp_path / "srv"), sample_status(os.getpid(), now_iso()))
    assert cli.main(["status", "--config", str(ini)]) == 0
    assert "workdir        %s" % (tmp_path / "srv") in capsys.readouterr().out
    ini.write_text(BASE + "interval = ten\n")
    assert cli.main(["status", "--config", str(ini)]) == 2
    assert 'interval = "ten"' in capsys.readouterr().err
