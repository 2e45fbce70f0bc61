"""Configurations that looked fine to `--check` and then failed at run time (a new operator's trial): each is
now a one-line config error naming the file, the key and what is expected, exit 2 before anything starts."""

import os
import subprocess
import sys

import pytest

from dewy import cli
from dewy.config import ConfigError, load_ini
from dewy.master import configview

APP = "python3 current/app.py"


def ini(tmp_path, extra: str, registry: str | None = None) -> str:
    """An ini file with a good registry and app plus the extra lines; returns its path."""
    path = tmp_path / "dewy.ini"
    registry = registry or "file://%s/reg?artifact=app.tar.gz" % tmp_path
    path.write_text("[dewy]\nregistry = %s\napp = %s\nworkdir = w\n%s" % (registry, APP, extra))
    return str(path)


def error(path: str) -> str:
    """load_ini's one-line message for path, without the "<path>: " prefix."""
    with pytest.raises(ConfigError) as info:
        load_ini(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(path + ": "), message
    return message[len(path) + 2:]


def check(path: str, env=None) -> subprocess.CompletedProcess:
    """The real `dewy-master -c INI --check`."""
    return subprocess.run([sys.executable, "-m", "dewy.master", "-c", path, "--check"], capture_output=True,
                          text=True, timeout=30, env=env)


# --- 1. a cache directory that can never exist -----------------------------------------------------

def test_a_cache_directory_under_a_regular_file_is_a_config_error(tmp_path):
    (tmp_path / "wfile").write_text("")
    path = ini(tmp_path, "cache = file://%s/wfile/cache\n" % tmp_path)
    result = check(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        'dewy-master: %s: [dewy] cache = "file://%s/wfile/cache": cannot create the cache directory %s/wfile/cache: '
        "%s/wfile is not a directory" % (path, tmp_path, tmp_path, tmp_path))
    assert not (tmp_path / "w").exists()


def test_a_cache_directory_that_is_a_file_is_a_config_error(tmp_path):
    (tmp_path / "c").write_text("")
    message = error(ini(tmp_path, "cache = file://%s/c\n" % tmp_path))
    assert message.endswith("the cache directory %s/c exists and is not a directory" % tmp_path)


def test_an_unusable_dewy_cachedir_is_a_config_error(tmp_path):
    (tmp_path / "wfile").write_text("")
    env = dict(os.environ, DEWY_CACHEDIR=str(tmp_path / "wfile" / "c"))
    for extra in ("", "cache = file\n", "cache = redis://127.0.0.1:1/0\n"):  # shared caches keep artifacts there
        result = check(ini(tmp_path, extra), env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "cannot create the cache directory %s/wfile/c: %s/wfile is not a directory (from $DEWY_CACHEDIR)" % (
            tmp_path, tmp_path) in result.stderr
    env["DEWY_CACHEDIR"] = str(tmp_path / "fine" / "c")
    assert check(ini(tmp_path, ""), env=env).returncode == 0


def test_a_cache_directory_that_can_be_created_is_fine(tmp_path):
    load_ini(ini(tmp_path, "cache = file://%s/new/deeper/cache\n" % tmp_path))
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_a_cache_directory_someone_else_may_write_is_no_config_error(tmp_path):
    """Read-only commands (`dewy status -c`, `dewy fleet -c`) load the ini as whoever runs them: a cache
    directory that user cannot write is the poller's concern (one line at its start), not a config error."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert load_ini(ini(tmp_path, "cache = file://%s/cache\n" % locked)).cache == "file://%s/cache" % locked


# --- 2. ready / health written as a URL -------------------------------------------------------------

@pytest.mark.parametrize("key, value, right", [
    ("ready", "http://127.0.0.1/healthz", "http:/healthz"),
    ("ready", "http://localhost/healthz", "http:/healthz"),
    ("ready", "http://127.0.0.1:8000/healthz:30s", "http:/healthz:30s"),
    ("ready", "https://localhost/", "http:/PATH such as http:/healthz"),
    ("health", "http://127.0.0.1/healthz", "http:/healthz"),
    ("health", "HTTP://localhost/up", "http:/up"),
])
def test_ready_and_health_as_a_url_show_the_right_form(tmp_path, key, value, right):
    message = error(ini(tmp_path, "port = 8000\n%s = %s\n" % (key, value)))
    assert message == ('[dewy] %s = "%s": expected a path on the app\'s own socket, not a URL with a host: write %s '
                       "(dewy asks the app's first TCP listener)" % (key, value, right))


def test_ready_and_health_paths_still_work(tmp_path):
    config = load_ini(ini(tmp_path, "port = 8000\nready = http:/healthz:30s\nhealth = http:/up\n"))
    assert (config.ready.path, config.ready.seconds, config.health) == ("/healthz", 30.0, "/up")


# --- 3. comments and stray whitespace in URL-valued settings -------------------------------------
# One rule for the whole ini file: a # after whitespace starts a comment, for every key (README "Configuration
# reference"); an inline ; is no comment, and in a URL it is refused as a misplaced one.

SEMICOLON = ("a ; after a space is no comment in dewy's ini files: comments start with # (after a space, or at the "
             "start of a line); a ; that belongs to the URL is written %3B")
QUERY_SPACE = "whitespace next to the query's ? & or =: remove it (in a query value write a space as %20)"


@pytest.mark.parametrize("key, value, expected", [
    ("registry", "file:///srv/reg4?artifact=app.tar.gz  # our registry", "file:///srv/reg4?artifact=app.tar.gz"),
    ("registry", "file:///srv/reg\t# our registry ?artifact=app.tar.gz", "file:///srv/reg"),
    ("cache", "file:///var/cache/dewy # local", "file:///var/cache/dewy"),
    ("cache", "redis://:PASSWORD@cache.internal:6379/0?registry-ttl=30s     # keep this ini chmod 600",
     "redis://:PASSWORD@cache.internal:6379/0?registry-ttl=30s"),
    ("notifier", "https://hooks.example.com/x # team", "https://hooks.example.com/x"),
    ("notifier", "https://hooks.example.com/x#frag # team", "https://hooks.example.com/x#frag"),
])
def test_a_comment_after_a_url_is_a_comment(tmp_path, key, value, expected):
    extra = "" if key == "registry" else "%s = %s\n" % (key, value)
    config = load_ini(ini(tmp_path, extra, registry=value if key == "registry" else None))
    assert getattr(config, key) == expected


@pytest.mark.parametrize("key, value, expected", [
    ("registry", "file:///srv/reg ; old one", SEMICOLON),
    ("notifier", "https://hooks.example.com/x ;team", SEMICOLON),
    ("registry", "file:///srv/reg   ?artifact=app.tar.gz", QUERY_SPACE),
    ("registry", "file:///srv/reg?artifact=app.tar.gz  &pre-release=true", QUERY_SPACE),
    ("registry", "file:///srv/reg?artifact= app.tar.gz", QUERY_SPACE),
])
def test_a_semicolon_comment_and_stray_whitespace_in_urls_are_refused(tmp_path, key, value, expected):
    extra = "" if key == "registry" else "%s = %s\n" % (key, value)
    path = ini(tmp_path, extra, registry=value if key == "registry" else None)
    # a notifier URL's path is its credential (a Slack webhook): errors show its host only
    shown = "https://hooks.example.com/..." if key == "notifier" else value
    assert error(path) == '[dewy] %s = "%s": %s' % (key, shown, expected)


def test_the_real_check_takes_an_inline_comment(tmp_path):
    path = ini(tmp_path, "interval = 30s   # half a minute\n",
               registry="file://%s/reg?artifact=app.tar.gz  # our registry" % tmp_path)
    result = check(path)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr


@pytest.mark.parametrize("line, attr, expected", [
    ("app = python3 app.py --flag   # the sample app", "app", ("python3", "app.py", "--flag")),
    ("workdir = /srv/dewy\t# where releases live", "workdir", "/srv/dewy"),
    ("interval = 30s # half a minute", "interval", 30.0),
    ("rollout-waves = 10%, 50%      # the first 10% of the hosts", "rollout_waves", (10.0, 50.0)),
    ("host-id = web-3               # default: the hostname", "host_id", "web-3"),
    ("slot =   # none yet", "slot", ""),
    ("before-deploy-hook = ./migrate ; echo done  # ; is no comment", "before_deploy_hook", "./migrate ; echo done"),
    ("after-deploy-hook = echo release#$DEWY_VERSION", "after_deploy_hook", "echo release#$DEWY_VERSION"),
])
def test_a_comment_after_whitespace_is_a_comment_for_every_key(tmp_path, line, attr, expected):
    extra = "cache = redis://127.0.0.1:1/0\n" if attr == "rollout_waves" else ""
    path = tmp_path / "dewy.ini"
    text = "[dewy]  # dewy's section\nregistry = file:///srv/r\n%s%s\n" % (extra, line)
    path.write_text(text if attr == "app" else text + "app = ./app\n")
    assert getattr(load_ini(str(path)), attr) == expected


def test_comments_on_the_lines_of_a_port_list(tmp_path):
    config = load_ini(ini(tmp_path, "port = 8000   # the app\n  8443   # its TLS port\n  # (none more)\n"))
    assert config.port == ("8000", "8443")


def test_an_indented_line_under_a_single_line_key_is_shown_without_its_comment(tmp_path):
    path = ini(tmp_path, "interval = 30s\n  port = 8000   # meant as a key\n")
    assert error(path) == ('line 6: "port = 8000" is indented, so it would continue [dewy] interval, which takes '
                           "one line; remove the indentation (only port may continue on indented lines)")


def test_a_hash_in_a_file_url_without_whitespace_is_part_of_the_path(tmp_path):
    # A file:// URL has no fragment: reg#2 is the directory's name (in any URL %23 says the same).
    (tmp_path / "reg#2" / "v1.0.0").mkdir(parents=True)
    (tmp_path / "reg#2" / "v1.0.0" / "app.tar.gz").write_bytes(b"x")
    from dewy.registry import from_url

    for written in ("reg#2", "reg%232"):
        config = load_ini(ini(tmp_path, "", registry="file://%s/%s?artifact=app.tar.gz  # note" % (tmp_path, written)))
        assert from_url(config.registry).latest().version == "1.0.0"


@pytest.mark.parametrize("key, written, cut, fixed", [
    ("registry", "file:///tmp/x #1/reg?artifact=app.tar.gz", "file:///tmp/x", "file:///tmp/x %231/reg?artifact=app.tar.gz"),
    ("registry", "file:///srv/reg #2", "file:///srv/reg", "file:///srv/reg %232"),
    ("cache", "file:///var/cache/dewy #old", "file:///var/cache/dewy", "file:///var/cache/dewy %23old"),
])
def test_a_hash_after_a_space_that_goes_on_in_a_file_url_is_refused_as_ambiguous(tmp_path, key, written, cut, fixed):
    """Issue 16 item 18: `file:///tmp/x #1/reg` was silently cut to /tmp/x (--check said OK), though a # in a
    file:// URL is part of the path: which one was meant is refused, naming the file, the key and both readings."""
    extra = "" if key == "registry" else "%s = %s\n" % (key, written)
    path = ini(tmp_path, extra, registry=written if key == "registry" else None)
    import json
    assert error(path) == ('[dewy] %s = %s: a # after a space starts a comment, which would cut the URL to %s; a # '
                           'of the path is written %%23 (%s), a comment\'s # is followed by a space'
                           % (key, json.dumps(written), cut, fixed))
    result = check(path)
    assert result.returncode == 2 and "a # after a space starts a comment" in result.stderr, result


def test_a_file_path_with_spaces_and_a_fragment_without_spaces_still_work(tmp_path):
    config = load_ini(ini(tmp_path, "notifier = https://hooks.example.com/x#frag\n",
                          registry="file:///srv/my releases/app?artifact=app.tar.gz"))
    assert config.registry == "file:///srv/my releases/app?artifact=app.tar.gz"
    assert config.notifier == "https://hooks.example.com/x#frag"


# --- 3b. on the command line nothing is a comment ------------------------------------------------

def test_a_path_with_a_space_and_hash_works_as_a_flag(tmp_path, capsys):
    """`dewy latest --registry 'file:///.../reg #2?...'` reads the directory `reg #2` (it was refused as an
    inline comment, and before that its # was taken for a URL fragment)."""
    (tmp_path / "reg #2" / "v1.0.0").mkdir(parents=True)
    (tmp_path / "reg #2" / "v1.0.0" / "app.tar.gz").write_bytes(b"x")
    code = cli.main(["latest", "--registry", "file://%s/reg #2?artifact=app.tar.gz" % tmp_path, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    import json

    answer = json.loads(out)
    assert answer["version"] == "1.0.0" and answer["artifact"] == "app.tar.gz", answer


def test_a_semicolon_after_a_space_is_fine_as_a_flag(tmp_path):
    from dewy.config import from_options

    (tmp_path / "a ;b").mkdir()
    config = from_options({"registry": "file://%s/a ;b" % tmp_path, "app": ["./app"]}, base_dir=str(tmp_path))
    from dewy import urls

    assert urls.parse(config.registry).path == "%s/a ;b" % tmp_path


# --- 4. quoted paths -------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("workdir", '"/tmp/trial-play/w q"'), ("workdir", "'/srv/app'"),
                                        ("dir", '"/srv/www"'), ("workdir", "' /srv/app '")])
def test_a_quoted_path_is_a_config_error(tmp_path, key, value):
    path = tmp_path / "dewy.ini"
    path.write_text("[dewy]\nregistry = file:///srv/r\napp = a\n%s = %s\n" % (key, value))
    assert error(str(path)) == '[dewy] %s = %s: expected the path without quotes (spaces need none): %s' % (
        key, json_quote(value), value[1:-1].strip())


@pytest.mark.parametrize("value", ["/srv/bobs'", "/srv/app\"", "'/srv/app", "/srv/it's", "/srv/\"a'", "'"])
def test_a_path_with_a_quote_that_is_not_quoting_it_is_taken_as_written(tmp_path, value):
    path = tmp_path / "dewy.ini"
    path.write_text("[dewy]\nregistry = file:///srv/r\napp = a\nworkdir = %s\n" % value)
    assert load_ini(str(path)).workdir == os.path.join(str(tmp_path), value)


def json_quote(value: str) -> str:
    import json
    return json.dumps(value)


def test_a_path_with_spaces_needs_no_quotes(tmp_path):
    path = tmp_path / "dewy.ini"
    path.write_text("[dewy]\nregistry = file:///srv/r\napp = a\nworkdir = /tmp/trial play/w q\n")
    assert load_ini(str(path)).workdir == "/tmp/trial play/w q"


# --- 5. listen addresses that overlap ---------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("20813, 127.0.0.1:20813",
     '"127.0.0.1:20813" overlaps "20813" (a bare port listens on every IPv4 address): both would take the same '
     "address; list it once"),
    ("0.0.0.0:80 127.0.0.1:80", '"127.0.0.1:80" overlaps "0.0.0.0:80" (0.0.0.0 listens on every address)'),
    ("[::1]:80 [::]:80", '"[::]:80" overlaps "[::1]:80" ([::] listens on every address)'),
    ("8000-8002 127.0.0.1:8001", '"127.0.0.1:8001" overlaps "8001"'),
    ("8000 0.0.0.0:8000", '"0.0.0.0:8000" overlaps "8000"'),
])
def test_overlapping_ports_are_refused(tmp_path, value, expected):
    assert error(ini(tmp_path, "port = %s\n" % value)).startswith('[dewy] port = "%s": %s' % (value, expected))


def test_ports_that_do_not_overlap_are_fine(tmp_path):
    config = load_ini(ini(tmp_path, "port = 8000 [::1]:8000 127.0.0.1:8001 127.0.0.2:8001 unix:/run/a.sock\n"))
    assert len(config.port) == 5


@pytest.mark.parametrize("extra, expected", [
    ("port = 20813\nmetrics = 127.0.0.1:20813\n",
     '[dewy] metrics = "127.0.0.1:20813": overlaps port "20813" (a bare port listens on every IPv4 address): both '
     "would take the same address; give metrics a port of its own"),
    ("port = 127.0.0.1:9000\nmetrics = :9000\n",
     '[dewy] metrics = ":9000": overlaps port "127.0.0.1:9000" (0.0.0.0 listens on every address)'),
    ("port = 8000\nmetrics = 127.0.0.1:9000\ntrigger = :9000\ntrigger-token = t\n",
     '[dewy] trigger = ":9000": overlaps metrics = "127.0.0.1:9000": both would take the same address; give each '
     "a port of its own"),
    ("port = [::1]:9000\ntrigger = [::1]:9000\ntrigger-token = t\n",
     '[dewy] trigger = "[::1]:9000": overlaps port "[::1]:9000": both would take the same address'),
    # The poller's servers listen dual-stack: their [::] takes every IPv4 address too.
    ("port = 21120\nmetrics = [::]:21120\n",
     '[dewy] metrics = "[::]:21120": overlaps port "21120" (metrics = [::] listens dual-stack: on every IPv6 and '
     "every IPv4 address): both would take the same address; give metrics a port of its own"),
    ("port = 127.0.0.1:21121\nmetrics = [::]:21121\n",
     '[dewy] metrics = "[::]:21121": overlaps port "127.0.0.1:21121" (metrics = [::] listens dual-stack'),
    ("port = 0.0.0.0:21122\ntrigger = [::]:21122\ntrigger-token = t\n",
     '[dewy] trigger = "[::]:21122": overlaps port "0.0.0.0:21122" (trigger = [::] listens dual-stack'),
    ("port = 8000\nmetrics = 127.0.0.1:9000\ntrigger = [::]:9000\ntrigger-token = t\n",
     '[dewy] trigger = "[::]:9000": overlaps metrics = "127.0.0.1:9000"'),
    ("port = 8000\nmetrics = [::]:9000\ntrigger = 127.0.0.1:9000\ntrigger-token = t\n",
     '[dewy] trigger = "127.0.0.1:9000": overlaps metrics = "[::]:9000"'),
])
def test_metrics_and_trigger_on_a_listen_address_are_refused(tmp_path, extra, expected):
    assert error(ini(tmp_path, extra)).startswith(expected)


def test_metrics_and_trigger_on_their_own_ports_are_fine(tmp_path):
    config = load_ini(ini(tmp_path, "port = 8000\nmetrics = 127.0.0.1:9464\ntrigger = :9465\ntrigger-token = t\n"))
    assert (config.metrics, config.trigger) == ("127.0.0.1:9464", ":9465")


def test_metrics_on_an_ipv4_address_beside_dewys_own_ipv6_wildcard_is_fine(tmp_path):
    # dewy's own [::] sockets are IPv6 only (IPV6_V6ONLY): an IPv4 metrics address on the same port is free.
    config = load_ini(ini(tmp_path, "port = [::]:21120\nmetrics = 127.0.0.1:21120\n"))
    assert config.metrics == "127.0.0.1:21120"


def _ipv6_works() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_works(), reason="no IPv6 on this host")
def test_the_overlap_rule_for_metrics_on_ipv6_wildcard_matches_what_binding_does(tmp_path):
    """The real servers: dewy's port socket on 127.0.0.1:P keeps the real metrics server off [::]:P (refused by
    the check), and dewy's [::]:P socket leaves it 127.0.0.1:P (allowed by the check)."""
    from dewy.master import sockets
    from dewy.poller.metrics import Metrics

    probe = sockets.bind("127.0.0.1:0", 8)
    port = probe.sock.getsockname()[1]
    try:
        metrics = Metrics()
        metrics.start("[::]:%d" % port)
        assert not metrics.enabled  # "cannot serve metrics on [::]:P: Address already in use"
        with pytest.raises(ConfigError, match="dual-stack"):
            load_ini(ini(tmp_path, "port = 127.0.0.1:%d\nmetrics = [::]:%d\n" % (port, port)))
    finally:
        probe.close()
    v6 = sockets.bind("[::]:%d" % port, 8)
    try:
        metrics = Metrics()
        metrics.start("127.0.0.1:%d" % port)
        try:
            assert metrics.enabled
        finally:
            metrics.stop()
        load_ini(ini(tmp_path, "port = [::]:%d\nmetrics = 127.0.0.1:%d\n" % (port, port)))
    finally:
        v6.close()


def test_the_real_check_refuses_overlapping_ports(tmp_path):
    result = check(ini(tmp_path, "port = 20813, 127.0.0.1:20813\n"))
    assert result.returncode == 2 and "overlaps" in result.stderr and "OK" not in result.stdout, result.stderr


# --- 6. misleading command-line and URL errors ----------------------------------------------------

def test_a_url_as_a_port_says_so(tmp_path):
    assert error(ini(tmp_path, "port = tcp://127.0.0.1:20906\n")) == (
        '[dewy] port = "tcp://127.0.0.1:20906": "tcp://127.0.0.1:20906": port takes HOST:PORT, PORT or unix:/path, '
        "not a URL")


def test_a_bare_cache_word_with_a_query_says_it_takes_none(tmp_path):
    assert error(ini(tmp_path, "cache = file?registry-ttl=30s\n")) == (
        '[dewy] cache = "file?registry-ttl=30s": cache = file takes no query; query keys such as registry-ttl need '
        "a cache the fleet shares (consul, gs, redis, rediss, s3, unix)")


def test_a_bare_registry_word_with_a_query_says_to_write_the_whole_url(tmp_path):
    assert error(ini(tmp_path, "", registry="file?artifact=a.tgz")) == (
        '[dewy] registry = "file?artifact=a.tgz": bare "file" takes no query; write the whole URL '
        "(file:// and the rest before the ?)")


@pytest.mark.parametrize("argv, expected", [
    (["fleet"], "dewy: `dewy fleet` needs -c INI (the ini file whose cache the fleet shares)"),
    (["fleet", "--json"], "dewy: `dewy fleet` needs -c INI"),
    (["status", "--workdir", "a", "--workdir", "b"], "dewy: --workdir given twice; give it once"),
    (["server", "--interval", "1s", "-i", "2s", "--", "app"], "dewy: --interval given twice; give it once"),
    (["server", "-i1s", "--interval=2s", "--", "app"], "dewy: --interval given twice; give it once"),
    (["history", "-c", "a.ini", "--config", "b.ini"], "dewy: --config given twice; give it once"),
])
def test_command_line_errors_say_what_is_wrong(capsys, argv, expected):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(expected)


def test_a_repeatable_flag_given_twice_is_not_called_a_repeat(capsys):
    # --port may repeat: the complaint is about the unknown flag, not "--port given twice".
    assert cli.main(["server", "-p", "1", "-p", "2", "--bogus", "--", "app"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == "dewy: unexpected --bogus"


@pytest.mark.parametrize("argv, expected", [
    (["--check"], "dewy-master: `dewy-master --check` needs -c INI (the ini file to validate)"),
    (["-c", "a.ini", "-c", "b.ini"], "dewy-master: --config given twice; give it once"),
])
def test_dewy_master_command_line_errors_say_what_is_wrong(capsys, argv, expected):
    assert cli.master_main(argv) == 2
    assert capsys.readouterr().err.splitlines()[0] == expected


# --- 8. a poll interval that only burns CPU ------------------------------------------------------

@pytest.mark.parametrize("value", ["1ms", "99ms", "0.05"])
def test_an_interval_below_100ms_is_refused(tmp_path, value):
    assert error(ini(tmp_path, "interval = %s\n" % value)) == (
        '[dewy] interval = "%s": expected a duration of at least 100ms (polling more often only burns CPU), such as '
        "500ms, 10s or 1m" % value)
    assert load_ini(ini(tmp_path, "interval = 100ms\n")).interval == 0.1


# --- 8. settings that do nothing here: a warning, not an error -------------------------------------

@pytest.mark.parametrize("extra, expected", [
    ("rollout-soak = 10m\n", '[dewy] rollout-soak = "10m": has no effect without rollout-waves (every host deploys '
                             "at once)"),
    ("dir = /srv/www\n", '[dewy] dir = "/srv/www": has no effect in server mode (only assets mode keeps that '
                         "symlink)"),
])
def test_settings_without_effect_are_warned_about_by_check(tmp_path, extra, expected):
    path = ini(tmp_path, extra)
    warnings = []
    load_ini(path, warnings)
    assert warnings == ["%s: %s" % (path, expected)]
    result = check(path)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr
    assert "dewy-master: warning: %s: %s" % (path, expected) in result.stderr
    # The plain `dewy-master -c INI` start loads the file in a child (configview): the warning comes back too.
    assert configview.load(path).warnings == ("%s: %s" % (path, expected),)


def test_no_warning_where_the_settings_take_effect(tmp_path):
    warnings = []
    load_ini(ini(tmp_path, "rollout-soak = 10m\nrollout-waves = 10%, 50%\ncache = redis://127.0.0.1:1/0\n"),
             warnings)
    path = tmp_path / "assets.ini"
    path.write_text("[dewy]\nmode = assets\nregistry = file:///srv/r\ndir = /srv/www\n")
    load_ini(str(path), warnings)
    assert warnings == []


def test_the_master_refuses_to_start_on_overlapping_ports_or_an_unusable_cache(tmp_path):
    # Not only --check: the start-up (and so a HUP reload, which loads the file the same way) refuses too.
    (tmp_path / "wfile").write_text("")
    for extra in ("port = 20813, 127.0.0.1:20813\n", "port = 127.0.0.1:1\ncache = file://%s/wfile/c\n" % tmp_path):
        path = ini(tmp_path, extra)
        result = subprocess.run([sys.executable, "-m", "dewy.master", "-c", path], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("dewy-master: %s: [dewy] " % path)
        assert not (tmp_path / "w").exists()


def test_an_ampersand_or_equals_sign_with_spaces_in_a_file_path_is_fine(tmp_path):
    config = load_ini(ini(tmp_path, "cache = file:///var/cache/a & b = c\n", registry="file:///srv/r & d?artifact=a"))
    assert (config.registry, config.cache) == ("file:///srv/r & d?artifact=a", "file:///var/cache/a & b = c")
