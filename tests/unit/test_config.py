"""dewy.config: every setting's good and bad values, ini files, defaults, paths, JSON round trip, reference."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from pathlib import Path

from dewy import config, log
from dewy.config import Config, ConfigError, Ready, load_ini, from_options, parse_duration, parse_ports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGISTRY = "file:///srv/releases"
BASE = "[dewy]\nregistry = %s\napp = ./current/bin/app\n" % REGISTRY


def write_ini(tmp_path, text: str, name: str = "dewy.ini") -> str:
    """Write an ini file under tmp_path and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_with(tmp_path, **settings) -> Config:
    """load_ini of a [dewy] section with registry, app and these settings (underscores in keys become hyphens)."""
    values = {"registry": REGISTRY, "app": "./current/bin/app"}
    values.update((k.replace("_", "-"), v) for k, v in settings.items())
    lines = "".join("%s = %s\n" % item for item in values.items())
    return load_ini(write_ini(tmp_path, "[dewy]\n" + lines))


def ini_error(tmp_path, text: str) -> str:
    """The one-line ConfigError message load_ini gives for an ini file with this text."""
    path = write_ini(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_ini(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ": ")
    return message[len(path) + 2:]


# --- every bad kind, with its message; test_cli runs the same through `dewy-master -c` ------------

# (id, ini text, expected message after "<path>: "); "{}" in the text stands for BASE without the key.
INI_ERRORS = [
    ("bad-duration", BASE + "interval = ten\n",
     '[dewy] interval = "ten": expected a duration such as 500ms, 10s, 1m or plain seconds'),
    ("zero-interval", BASE + "interval = 0\n",
     '[dewy] interval = "0": expected a duration of at least 100ms (polling more often only burns CPU), '
     'such as 500ms, 10s or 1m'),
    ("negative-duration", BASE + "graceful-timeout = -1s\n",
     '[dewy] graceful-timeout = "-1s": expected a duration such as 500ms, 10s, 1m or plain seconds'),
    ("bad-verify-checksum", BASE + "verify-checksum = yes\n",
     '[dewy] verify-checksum = "yes": expected one of: auto, required, off'),
    ("bad-metrics", BASE + "metrics = 9464\n",
     '[dewy] metrics = "9464": expected HOST:PORT such as 127.0.0.1:9464, [::1]:9464 or :9464'),
    ("negative-poll-backoff-max", BASE + "poll-backoff-max = -1s\n",
     '[dewy] poll-backoff-max = "-1s": expected a duration'),
    ("bad-rollback", BASE + "rollback = no\n", '[dewy] rollback = "no": expected one of: on, off'),
    ("bad-otlp-endpoint", BASE + "otlp-endpoint = collector\n",
     '[dewy] otlp-endpoint = "collector": expected HOST:PORT'),
    ("zero-hook-timeout", BASE + "hook-timeout = 0s\n",
     '[dewy] hook-timeout = "0s": expected a duration of at least 100ms (a shorter one kills every hook, failing '
     'every deploy), such as 500ms, 10s or 1m'),
    # Issue 16 item 11: every duration that drives work has a floor (health-interval = 1ms restarted a healthy
    # app 156 times in 8 s); graceful-timeout and rollout-soak only bound a wait and may be 0.
    ("tiny-health-interval", BASE + "health-interval = 1ms\n",
     '[dewy] health-interval = "1ms": expected a duration of at least 100ms (each check may take as long: a '
     'shorter one fails healthy apps), such as 500ms, 10s or 1m'),
    ("tiny-hook-timeout", BASE + "hook-timeout = 99ms\n",
     '[dewy] hook-timeout = "99ms": expected a duration of at least 100ms (a shorter one kills every hook, failing '
     'every deploy), such as 500ms, 10s or 1m'),
    ("tiny-poll-backoff-max", BASE + "poll-backoff-max = 10ms\n",
     '[dewy] poll-backoff-max = "10ms": expected 0 (never) or a duration of at least 100ms (polling more often only '
     'burns CPU), such as 500ms, 10s or 1m'),  # 0: no backoff, as Dewy's --max-backoff-interval 0
    ("tiny-health-timeout", BASE + "health-timeout = 10ms\n",
     '[dewy] health-timeout = "10ms": expected a duration of at least 100ms (a shorter one refuses every good '
     'image), such as 500ms, 10s or 1m'),
    ("tiny-proxy-idle-timeout", BASE + "proxy-idle-timeout = 1ms\n",
     '[dewy] proxy-idle-timeout = "1ms": expected 0 (never) or a duration of at least 100ms (a shorter one cuts '
     'every connection that waits), such as 500ms, 10s or 1m'),
    ("tiny-ready-notify", BASE + "ready = notify:1ms\n",
     '[dewy] ready = "notify:1ms": the notify readiness timeout must be at least 100ms (a shorter one refuses '
     'every good release)'),
    ("tiny-ready-http", BASE + "ready = http:/healthz:50ms\n",
     '[dewy] ready = "http:/healthz:50ms": the http readiness timeout must be at least 100ms (a shorter one '
     'refuses every good release)'),
    ("unknown-key", BASE + "intervall = 10s\n", '[dewy] unknown key "intervall" (did you mean "interval" or "health-interval"?)'),
    ("unknown-key-far", BASE + "zzzz = 1\n", '[dewy] unknown key "zzzz" (valid keys: mode, registry, port,'),
    ("bad-scheme", "[dewy]\nregistry = ftp://x\napp = a\n",
     '[dewy] registry = "ftp://x": unsupported scheme "ftp"; supported: '),
    ("bad-query-key", "[dewy]\nregistry = file:///r?prerelease=true\napp = a\n",
     '[dewy] registry = "file:///r?prerelease=true": unknown query key "prerelease" for file://; supported: '),
    ("missing-registry", "[dewy]\napp = a\n", "[dewy] registry is required (e.g. registry = file:///srv/releases)"),
    ("empty-registry", "[dewy]\nregistry =\napp = a\n", '[dewy] registry = "": expected a registry URL'),
    ("bad-cache", BASE + "cache = nosuch://x\n", '[dewy] cache = "nosuch://x": unsupported scheme "nosuch"; supported: '),
    ("bad-notifier", BASE + "notifier = nosuch://x\n",
     '[dewy] notifier = "nosuch://x": unsupported scheme "nosuch"; supported: '),
    ("port-range", BASE + "port = 8000, 70000\n", '[dewy] port = "8000, 70000": port 70000 is out of range 1..65535'),
    ("port-zero", BASE + "port = 0\n", '[dewy] port = "0": port 0 is out of range 1..65535'),
    ("port-backwards", BASE + "port = 8005-8000\n",
     '[dewy] port = "8005-8000": "8005-8000": a port range must go from low to high'),
    ("port-garbage", BASE + "port = http\n", '[dewy] port = "http": "http": expected a listen address such as 8000'),
    ("port-duplicate", BASE + "port = 8000-8002 8001\n",
     '[dewy] port = "8000-8002 8001": "8001" is listed twice (as "8001")'),
    ("port-too-many", BASE + "port = 1-2000\n", '[dewy] port = "1-2000": "1-2000": at most 1024 listen addresses'),
    ("port-ipv6-brackets", BASE + "port = ::1:8000\n", '[dewy] port = "::1:8000": "::1:8000": write an IPv6 address in'),
    ("port-unix-empty", BASE + "port = unix:\n", '[dewy] port = "unix:": "unix:": expected unix:/path/to.sock'),
    ("port-unix-relative", BASE + "port = unix:rel.sock\n",
     '[dewy] port = "unix:rel.sock": "unix:rel.sock": a unix socket path must be absolute, e.g. unix:/run/app.sock'),
    ("interval-overflow", BASE + "interval = 99999999999h\n",
     '[dewy] interval = "99999999999h": expected a duration such as 500ms, 10s, 1m or plain seconds, '
     'at most 365 days'),
    ("log-level", BASE + "log-level = loud\n",
     '[dewy] log-level = "loud": expected one of: debug, info, warning, error'),
    ("log-format", BASE + "log-format = xml\n", '[dewy] log-format = "xml": expected one of: text, json'),
    ("ready", BASE + "ready = soon\n",
     '[dewy] ready = "soon": expected delay, delay:DURATION, notify, notify:TIMEOUT or http:/PATH[:TIMEOUT] '
     '(e.g. delay:1s, notify:30s, http:/healthz:30s)'),
    ("ready-duration", BASE + "ready = delay:forever\n",
     '[dewy] ready = "delay:forever": expected a duration such as 500ms, 10s, 1m or plain seconds'),
    ("notify-zero", BASE + "ready = notify:0\n", '[dewy] ready = "notify:0": the notify readiness timeout must be at least 100ms (a shorter one '
     'refuses every good release)'),
    ("stop-signal", BASE + "stop-signal = STOP\n",
     '[dewy] stop-signal = "STOP": expected a signal name or number: TERM, QUIT, INT, HUP, USR1, USR2, WINCH, KILL'),
    ("stop-signal-number", BASE + "stop-signal = 999\n", '[dewy] stop-signal = "999": expected a signal name or number'),
    ("keep-releases", BASE + "keep-releases = 0\n", '[dewy] keep-releases = "0": expected a whole number >= 1'),
    ("keep-releases-text", BASE + "keep-releases = many\n",
     '[dewy] keep-releases = "many": expected a whole number >= 1'),
    ("backlog", BASE + "backlog = 70000\n", '[dewy] backlog = "70000": expected a whole number 1..65535'),
    ("max-release-size", BASE + "max-release-size = 2 gigs\n",
     '[dewy] max-release-size = "2 gigs": expected a size such as 256MiB, 2GiB, 500MB or plain bytes '
     '(kB/MB/GB = 1000^n, KiB/MiB/GiB = 1024^n)'),
    ("max-release-size-zero", BASE + "max-release-size = 0\n",
     '[dewy] max-release-size = "0": expected a size such as 256MiB'),
    ("max-release-files", BASE + "max-release-files = 0\n",
     '[dewy] max-release-files = "0": expected a whole number >= 1'),
    ("slot", BASE + "slot = blue green\n", '[dewy] slot = "blue green": expected semver build metadata'),
    ("mode", BASE + "mode = daemon\n", '[dewy] mode = "daemon": expected one of: server, assets'),
    ("missing-app", "[dewy]\nregistry = %s\n" % REGISTRY, "[dewy] app is required in server mode (the command to run"),
    ("app-in-assets", BASE + "mode = assets\n",
     '[dewy] app = "./current/bin/app": must be empty in assets mode (assets runs no process)'),
    ("app-quote", "[dewy]\nregistry = %s\napp = run 'x\n" % REGISTRY,
     '[dewy] app = "run \'x": expected a shell-quoted command line (no closing quotation)'),
    ("empty-workdir", BASE + "workdir =\n", '[dewy] workdir = "": expected a directory path'),
    ("duplicate-key", BASE + "interval = 1s\ninterval = 2s\n", '[dewy] duplicate key "interval" (line 5)'),
    ("duplicate-section", BASE + "[dewy]\n", "duplicate section [dewy] (line 4)"),
    ("missing-section", "[server]\nregistry = x\n", "unknown section [server]; dewy reads only [dewy]"),
    ("default-section", "[DEFAULT]\nport = 1\n" + BASE, "unknown section [DEFAULT]; dewy reads only [dewy]"),
    ("no-section", "", "no [dewy] section"),
    ("key-before-section", "registry = x\n" + BASE,
     'line 1: "registry = x" before any section; expected [dewy] first'),
    ("parse-error", BASE + "this is not a setting\n",
     'line 4: cannot parse "this is not a setting"; expected key = value'),
    ("continued-app", BASE + "  port = 1234\n",
     'line 4: "port = 1234" is indented, so it would continue [dewy] app, which takes one line; remove the '
     'indentation (only port may continue on indented lines)'),
    ("continued-hook", BASE + "before-deploy-hook = make\n\tinstall\n",
     'line 5: "install" is indented, so it would continue [dewy] before-deploy-hook, which takes one line;'),
    ("continued-registry", "[dewy]\n  registry = file:///r?a=1\n      &token=s3cr3t\napp = a\n",
     'line 3: "&token=***" is indented, so it would continue [dewy] registry, which takes one line;'),
    ("credentials", "[dewy]\nregistry = ftps://bob:hunter2@example.com/r?token=s3cr3t\napp = a\n",
     '[dewy] registry = "ftps://bob:***@example.com/r?token=***": unsupported scheme "ftps"; supported: '),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in INI_ERRORS], ids=[c[0] for c in INI_ERRORS])
def test_ini_errors_are_one_line_naming_file_key_value_and_what_is_allowed(tmp_path, text, expected):
    assert ini_error(tmp_path, text).startswith(expected)


def test_credentials_never_appear_in_errors(tmp_path):
    message = ini_error(tmp_path, "[dewy]\nregistry = https://bob:hunter2@x/?token=s3cr3t&X-Amz-Signature=abc\n")
    assert "hunter2" not in message and "s3cr3t" not in message and "abc" not in message


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError, match=r"^%s: cannot read: No such file or directory$" % path):
        load_ini(path)


def test_unreadable_file_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"^%s: cannot read: " % tmp_path):
        load_ini(str(tmp_path))


def test_not_utf8(tmp_path):
    path = tmp_path / "dewy.ini"
    path.write_bytes(b"[dewy]\nregistry = \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read: not UTF-8 text"):
        load_ini(str(path))


def test_unknown_key_message_names_the_source_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_ini(tmp_path, BASE + "intervall = 10s\n")
    with pytest.raises(ConfigError) as info:
        load_ini("dewy.ini")
    assert str(info.value) == 'dewy.ini: [dewy] unknown key "intervall" (did you mean "interval" or "health-interval"?)'


# --- good values of every setting ----------------------------------------------------------------

def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = from_options({"registry": REGISTRY, "app": ["app"]})
    assert cfg.mode == "server"
    assert cfg.port == ()
    assert cfg.interval == 10.0
    assert (cfg.log_level, cfg.log_format) == ("info", "text")
    assert (cfg.cache, cfg.notifier) == ("file", "")
    assert (cfg.before_deploy_hook, cfg.after_deploy_hook, cfg.slot) == ("", "", "")
    assert cfg.workdir == str(tmp_path)
    assert cfg.ready == Ready("delay", 1.0)
    assert cfg.graceful_timeout == 30.0
    assert cfg.stop_signal == signal.SIGTERM
    assert (cfg.keep_releases, cfg.backlog) == (7, 1024)
    assert cfg.dir == ""
    assert cfg.hook_timeout == 300.0
    assert cfg.source == "command line"


def test_every_setting_has_a_default_or_is_required():
    for s in config.SETTINGS:
        assert s.doc and s.type
        if s.default is not None:
            s.validator(s.default, "/")  # the declared default passes its own validator
    assert [s.name for s in config.SETTINGS if s.default is None] == ["registry"]


def test_attributes_match_the_architecture_table():
    doc = (Path(__file__).parents[2] / "docs" / "ARCHITECTURE.md").read_text()
    table = doc[doc.index("Config attributes"):doc.index("## Pipe protocol")]
    documented = re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", table, re.M)
    documented = [name for row in documented for name in row if name]
    assert [*config.CONFIG_ATTRIBUTES, "source"] == documented


def test_config_is_frozen(tmp_path):
    cfg = load_with(tmp_path)
    with pytest.raises(Exception):
        cfg.interval = 1


GOOD = [
    ("mode", "server", "server"),
    ("mode", "SERVER", "server"),
    ("registry", "file:///srv/r?pre-release=true&artifact=app.tar.gz", "file:///srv/r?pre-release=true&artifact=app.tar.gz"),
    ("port", "8000", ("8000",)),
    ("port", "127.0.0.1:8000", ("127.0.0.1:8000",)),
    ("port", "[::1]:8000", ("[::1]:8000",)),
    ("port", "0.0.0.0:8000", ("0.0.0.0:8000",)),
    ("port", "localhost:8000", ("localhost:8000",)),
    ("port", "8000,8001", ("8000", "8001")),
    ("port", "8000, 8001-8002", ("8000", "8001", "8002")),
    ("port", "8000-8005", tuple(str(p) for p in range(8000, 8006))),
    ("port", "127.0.0.1:8000-8002", ("127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002")),
    ("port", "[::1]:9000-9001", ("[::1]:9000", "[::1]:9001")),
    ("port", "unix:/run/app.sock 8000", ("unix:/run/app.sock", "8000")),
    ("port", "8000 [::1]:8000", ("8000", "[::1]:8000")),  # a bare port is every IPv4 address only
    ("port", "1-1024", tuple(str(p) for p in range(1, 1025))),
    ("interval", "500ms", 0.5),
    ("interval", "10s", 10.0),
    ("interval", "1m", 60.0),
    ("interval", "1h", 3600.0),
    ("interval", "1.5s", 1.5),
    ("interval", "1m30s", 90.0),
    ("interval", "10", 10.0),
    ("interval", "0.5", 0.5),
    ("interval", "0.1", 0.1),
    ("interval", "100ms", 0.1),
    ("log-level", "debug", "debug"),
    ("log-level", "INFO", "info"),
    ("log-level", "warn", "warning"),
    ("log-level", "warning", "warning"),
    ("log-level", "error", "error"),
    ("log-format", "json", "json"),
    ("log-format", "text", "text"),
    ("cache", "file", "file"),
    ("cache", "memory", "memory"),
    ("cache", "file:///var/cache/dewy", "file:///var/cache/dewy"),
    ("notifier", "", ""),
    ("notifier", "log://", "log://"),
    ("before-deploy-hook", "test -f current/ok && echo 'ready'", "test -f current/ok && echo 'ready'"),
    ("after-deploy-hook", "curl -s http://127.0.0.1/ping", "curl -s http://127.0.0.1/ping"),
    ("slot", "blue", "blue"),
    ("slot", "green.2", "green.2"),
    ("slot", "", ""),
    ("ready", "delay", Ready("delay", 1.0)),
    ("ready", "delay:2s", Ready("delay", 2.0)),
    ("ready", "delay:0", Ready("delay", 0.0)),
    ("ready", "notify", Ready("notify", 60.0)),
    ("ready", "notify:30s", Ready("notify", 30.0)),
    ("ready", "NOTIFY:500ms", Ready("notify", 0.5)),
    ("graceful-timeout", "0", 0.0),
    ("graceful-timeout", "5s", 5.0),
    ("stop-signal", "TERM", signal.SIGTERM),
    ("stop-signal", "SIGTERM", signal.SIGTERM),
    ("stop-signal", "term", signal.SIGTERM),
    ("stop-signal", "15", signal.SIGTERM),
    ("stop-signal", "QUIT", signal.SIGQUIT),
    ("stop-signal", "INT", signal.SIGINT),
    ("stop-signal", "HUP", signal.SIGHUP),
    ("stop-signal", "USR1", signal.SIGUSR1),
    ("stop-signal", "SIGUSR2", signal.SIGUSR2),
    ("stop-signal", "WINCH", signal.SIGWINCH),
    ("stop-signal", "KILL", signal.SIGKILL),
    ("keep-releases", "1", 1),
    ("keep-releases", "20", 20),
    ("backlog", "1", 1),
    ("backlog", "65535", 65535),
    ("max-release-size", "2GiB", 2 * 1024 ** 3),
    ("max-release-size", "256MiB", 256 * 1024 ** 2),
    ("max-release-size", "500MB", 500 * 1000 ** 2),
    ("max-release-size", "1.5kB", 1500),
    ("max-release-size", "1048576", 1048576),
    ("max-release-files", "1", 1),
    ("max-release-files", "100000", 100000),
    ("dir", "", ""),
    ("dir", "/srv/www", "/srv/www"),
    ("hook-timeout", "1s", 1.0),
    ("hook-timeout", "5m", 300.0),
    ("verify-checksum", "Required", "required"),
    ("verify-checksum", "off", "off"),
    ("poll-backoff-max", "30s", 30.0),
    ("poll-backoff-max", "0", 0.0),  # off, as Dewy's --max-backoff-interval 0
    ("after-rollback-hook", "echo rolled back", "echo rolled back"),
    ("rollback", "OFF", "off"),
    ("rollback", "on", "on"),
    ("otlp-endpoint", "localhost:4317", "localhost:4317"),
    ("otlp-endpoint", "", ""),
    ("otlp-insecure", "true", "true"),
    ("health", "", ""),  # http:/PATH needs a TCP port: tests/unit/test_lifecycle_http.py
    ("health-interval", "30s", 30.0),
    ("health-failures", "5", 5),
    ("trigger", "", ""),  # HOST:PORT needs a token or secret: tests/unit/test_lifecycle_http.py
    ("trigger-token", "abc", "abc"),
    ("trigger-secret", "s3cret", "s3cret"),
    ("metrics", "", ""),
    ("metrics", "127.0.0.1:9464", "127.0.0.1:9464"),
    ("metrics", "[::1]:9464", "[::1]:9464"),
    ("rollout-waves", "", ()),  # percentages need a shared cache: tests/unit/test_fleet.py
    ("rollout-soak", "2m", 120.0),
    ("rollout-soak", "0", 0.0),
    ("host-id", "", ""),
    ("host-id", " web-3.eu ", "web-3.eu"),
    ("user", "", ""),
    ("user", " nobody ", "nobody"),
    ("user", "0", "0"),
    ("group", "", ""),
    ("app-env-keep", "", ()),
    ("app-env-keep", " AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY ", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
    ("notifier", "slack://deploys?quiet=true, https://hooks.example.com/x?secret=s",
     "slack://deploys?quiet=true, https://hooks.example.com/x?secret=s"),
    # container mode's (valid in any mode; tests/unit/test_container_config.py checks the mode itself)
    ("name", " web.1 ", "web.1"),
    ("replicas", "3", 3),
    ("health-path", "/health?deep=1", "/health?deep=1"),
    ("health-timeout", "5s", 5.0),
    ("drain-time", "0", 0.0),
    ("runtime", "podman", "podman"),
    ("cmd", "/bin/httpd -f -p '8080'", ("/bin/httpd", "-f", "-p", "8080")),
    ("proxy-idle-timeout", "1m", 60.0),
    ("container-args", "-e APP_ENV=prod -v /data:/data", ("-e", "APP_ENV=prod", "-v", "/data:/data")),
]


@pytest.mark.parametrize("key, raw, expected", GOOD, ids=["%s=%s" % g[:2] for g in GOOD])
def test_good_values_from_ini_and_command_line(tmp_path, key, raw, expected):
    attr = key.replace("-", "_")
    assert getattr(load_with(tmp_path, **{key: raw}), attr) == expected
    values = {"registry": REGISTRY, "app": ["app"], key: [raw] if key == "port" else raw}
    assert getattr(from_options(values), attr) == expected


def test_every_setting_has_good_values_tested():
    assert {g[0] for g in GOOD} | {"app", "workdir"} == {s.name for s in config.SETTINGS}


def test_port_values_from_repeated_flags():
    cfg = from_options({"registry": REGISTRY, "app": ["a"], "port": ["8000", "8001-8002", "unix:/tmp/a.sock"]})
    assert cfg.port == ("8000", "8001", "8002", "unix:/tmp/a.sock")


def test_ports_across_lines_in_ini(tmp_path):
    cfg = load_ini(write_ini(tmp_path, BASE + "port = 8000\n  8001-8002,\n  unix:/run/app.sock\n"))
    assert cfg.port == ("8000", "8001", "8002", "unix:/run/app.sock")


def test_an_indented_key_after_a_blank_or_comment_line_is_a_key_of_its_own(tmp_path):
    # configparser ends a value at a blank or comment line, so these are keys, not continuations of app.
    cfg = load_ini(write_ini(tmp_path, BASE + "\n  port = 1234\n# every 2s\n    interval = 2s\n"))
    assert (len(cfg.app), cfg.port, cfg.interval) == (1, ("1234",), 2.0)


def test_only_list_settings_may_continue_on_indented_lines():
    assert [s.name for s in config.SETTINGS if s.multiple] == ["port"]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "dewy.ini"
    path.write_bytes(b"\xef\xbb\xbf" + (BASE + "port = 8000\n").encode())
    cfg = load_ini(str(path))
    assert (cfg.registry, cfg.port) == (REGISTRY, ("8000",))


def test_port_duplicates_across_flags_are_refused():
    with pytest.raises(ConfigError, match=r'^command line: --port = "8000-8001": "8001" is listed twice'):
        from_options({"registry": REGISTRY, "app": ["a"], "port": ["8001", "8000-8001"]})


def test_parse_ports_edge_cases():
    assert parse_ports("") == ()
    assert parse_ports(["65535"]) == ("65535",)
    assert parse_ports("[fe80::1%eth0]:80") == ("[fe80::1%eth0]:80",)
    for bad in ("65536", "8000-", "-8000", "1.2.3.4.5:80", "999.1.1.1:80", "[::1]", "[::g]:80", ":80", "host:",
                "unix:/" + "x" * 200, "8000:8001"):
        with pytest.raises(ValueError):
            parse_ports(bad)


def test_parse_and_format_size():
    assert config.parse_size(" 2 GiB ") == 2 << 30 and config.parse_size("500mb") == 500_000_000
    for bad in ("", "0", "0.1", "-1", "GiB", "2GiBs", "2 gigs", "1e9", "inf", "1.2.3MB"):
        with pytest.raises(ValueError):
            config.parse_size(bad)
    assert [config.format_size(n) for n in (2 << 30, 500_000_000, 8 << 20, 4000, 1234567)] == [
        "2 GiB", "500 MB", "8 MiB", "4 kB", "1234567 bytes"]
    assert config.BY_NAME["max-release-size"].default == "2GiB"


def test_parse_duration():
    assert parse_duration("2h") == 7200
    assert parse_duration(" 10s ") == 10
    assert parse_duration(".5s") == 0.5
    for bad in ("", "s", "ten", "-1", "-1s", "1d", "1 s", "1e3", "inf", "nan", "1.2.3s", "10S"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- paths ---------------------------------------------------------------------------------------

def test_relative_workdir_and_dir_resolve_against_the_ini_file(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    monkeypatch.chdir("/")
    text = "[dewy]\nregistry = %s\nworkdir = ../srv\ndir = www\nmode = assets\napp =\n" % REGISTRY
    cfg = load_ini(write_ini(tmp_path, text, name="etc/dewy.ini"))
    assert cfg.workdir == str(tmp_path / "srv")
    assert cfg.dir == str(tmp_path / "etc" / "www")


def test_default_workdir_is_the_current_directory_even_for_ini(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    cfg = load_ini(write_ini(tmp_path, BASE, name="etc/dewy.ini"))
    assert cfg.workdir == str(tmp_path / "run")


def test_relative_paths_on_the_command_line_resolve_against_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = from_options({"registry": REGISTRY, "app": ["bin/app", "x/y"], "workdir": "w", "dir": "d"})
    assert cfg.workdir == str(tmp_path / "w")
    assert cfg.dir == str(tmp_path / "d")
    assert cfg.app == (str(tmp_path / "w" / "bin/app"), "x/y")
    other = from_options({"registry": REGISTRY, "app": ["a"], "workdir": "w"}, base_dir="/srv")
    assert other.workdir == "/srv/w"


def test_app_from_ini_is_shell_split_and_resolved_against_workdir(tmp_path):
    cfg = load_ini(write_ini(tmp_path, "[dewy]\nregistry = %s\nworkdir = /srv/app\n"
                                       "app = current/bin/server --name 'a b' \"c d\"\n" % REGISTRY))
    assert cfg.app == ("/srv/app/current/bin/server", "--name", "a b", "c d")


def test_app_on_path_or_absolute_is_kept(tmp_path):
    assert load_with(tmp_path, app="python3 -m http.server").app == ("python3", "-m", "http.server")
    assert load_with(tmp_path, app="/usr/bin/env x").app == ("/usr/bin/env", "x")


def test_assets_mode_needs_no_app(tmp_path):
    cfg = load_ini(write_ini(tmp_path, "[dewy]\nmode = assets\nregistry = %s\ndir = /var/www\n" % REGISTRY))
    assert (cfg.mode, cfg.app, cfg.dir) == ("assets", (), "/var/www")


def test_keys_are_case_insensitive_and_comments_allowed(tmp_path):
    cfg = load_ini(write_ini(tmp_path, "# dewy\n[dewy]\n; registry\nRegistry = %s\napp = a\n" % REGISTRY))
    assert cfg.registry == REGISTRY


def test_percent_signs_are_not_interpolated(tmp_path):
    assert load_with(tmp_path, before_deploy_hook="date +%s").before_deploy_hook == "date +%s"


def test_log_levels_and_formats_are_dewy_logs():
    level, fmt = config.BY_NAME["log-level"], config.BY_NAME["log-format"]
    assert level.type == "|".join(log.LEVELS) and fmt.type == "|".join(log.FORMATS)
    for name in list(log.LEVELS) + [alias.upper() for alias in log.LEVEL_ALIASES]:
        assert level.validator(name, "/") in log.LEVELS
    assert [fmt.validator(name, "/") for name in log.FORMATS] == list(log.FORMATS)
    with pytest.raises(config.BadValue, match="expected one of: %s$" % ", ".join(log.LEVELS)):
        level.validator("loud", "/")


def test_settings_are_declared_with_keyword_arguments():
    with pytest.raises(TypeError):
        config.Setting("x", "a doc", "text", "", config._text)  # positional: refused
    s = config.Setting(name="x-y", doc="a doc", type="text", default="", validator=config._text)
    assert (s.flag, s.attr, s.multiple) == ("--x-y", "x_y", False)
    assert config.Setting(name="x", doc="d", type="t", default="", validator=config._text, cli="-- X").flag is None


# --- command-line errors name the flag -----------------------------------------------------------

def test_command_line_errors_name_the_flag():
    with pytest.raises(ConfigError) as info:
        from_options({"registry": REGISTRY, "app": ["a"], "interval": "ten"})
    assert str(info.value) == ('command line: --interval = "ten": '
                               'expected a duration such as 500ms, 10s, 1m or plain seconds')
    with pytest.raises(ConfigError, match=r"^command line: --registry is required \(e\.g\. --registry file:///srv/releases\)$"):
        from_options({"app": ["a"]})
    with pytest.raises(ConfigError, match=r"^command line: -- CMD \[ARG...\] is required in server mode"):
        from_options({"registry": REGISTRY})


def test_python_values_are_accepted_as_text():
    cfg = from_options({"registry": REGISTRY, "app": ["a"], "backlog": 5, "port": [8000, 8001], "interval": 0.1})
    assert (cfg.backlog, cfg.port, cfg.interval) == (5, ("8000", "8001"), 0.1)


def test_unknown_option_name_is_refused():
    with pytest.raises(ConfigError, match="unknown setting bogus"):
        from_options({"registry": REGISTRY, "app": ["a"], "bogus": "1"})


# --- JSON round trip -----------------------------------------------------------------------------

def test_to_json_round_trips_exactly(tmp_path):
    cfg = load_with(tmp_path, port="127.0.0.1:8000-8001 unix:/run/a.sock [::1]:9000", interval="1.5s",
                    ready="notify:30s", stop_signal="QUIT", slot="blue", notifier="log://", keep_releases="3",
                    backlog="16", hook_timeout="250ms", log_format="json", before_deploy_hook="echo 'x y'")
    data = json.loads(json.dumps(cfg.to_json()))
    assert data["port"] == ["127.0.0.1:8000", "127.0.0.1:8001", "unix:/run/a.sock", "[::1]:9000"]
    assert data["ready"] == {"kind": "notify", "seconds": 30.0, "path": ""}
    again = Config.from_json(data)
    assert again == cfg
    assert isinstance(again.port, tuple) and isinstance(again.app, tuple) and isinstance(again.ready, Ready)
    assert Config.from_json(dict(data, added_by_a_newer_master=1)) == cfg


def test_from_json_refuses_an_incomplete_dict(tmp_path):
    data = load_with(tmp_path).to_json()
    del data["interval"]
    with pytest.raises(ValueError, match="interval"):
        Config.from_json(data)


# --- the reference -------------------------------------------------------------------------------

def test_markdown_table_has_a_row_per_setting():
    table = config.markdown_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [s.name for s in config.SETTINGS]
    for s in config.SETTINGS:
        if s.flag:
            assert s.flag in table
        if s.short:
            assert s.short + " " in table


def test_python_m_dewy_config_markdown():
    out = subprocess.run([sys.executable, "-m", "dewy.config", "--markdown"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out == config.markdown_table()


def _gen_reference():
    """The tools/gen_reference.py module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_reference", os.path.join(ROOT, "tools", "gen_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gen_reference_rewrites_only_between_the_markers(tmp_path):
    gen = _gen_reference()
    readme = tmp_path / "README.md"
    readme.write_text("# dewy\n\nintro\n\n%s\nold table\n%s\n\n## after\n" % (gen.BEGIN, gen.END))
    assert gen.main([str(readme), "--check"]) == 1
    assert gen.main([str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# dewy\n\nintro\n\n" + gen.BEGIN) and text.endswith(gen.END + "\n\n## after\n")
    assert "old table" not in text and config.markdown_table() in text
    for s in config.SETTINGS:
        assert "| `%s` |" % s.name in text
    assert gen.main([str(readme), "--check"]) == 0
    assert gen.main([str(readme)]) == 0 and readme.read_text() == text  # idempotent


def test_gen_reference_needs_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert _gen_reference().main([str(readme)]) == 2
    assert readme.read_text() == "# no markers\n"


def test_the_project_readme_reference_is_current():
    gen = _gen_reference()
    path = os.path.join(ROOT, "README.md")
    if not os.path.exists(path) or gen.BEGIN not in open(path, encoding="utf-8").read():
        pytest.skip("README.md has no configuration reference markers yet")
    assert gen.main([path, "--check"]) == 0, "run: python tools/gen_reference.py"
