"""`mode = container` / `dewy container`: Dewy's flags, the ini, what the generation is told, bad input."""

import json
import subprocess
import sys

import pytest

from dewy import cli, config
from dewy.config import ConfigError, Ready, from_options, load_ini

URL = "img://ghcr.io/owner/web"


def parse(argv):
    """`dewy container ...` as the CLI builds its Config."""
    args = cli._parse("container", argv)
    assert not isinstance(args, int)
    return from_options(cli.options_from_args(args))


def spec_of(cfg) -> dict:
    assert cfg.app[1:3] == ("-m", "dewy.container.generation")
    return json.loads(cfg.app[3])


def test_dewy_flags_reach_the_generation_spec():
    cfg = parse(["container", "--registry", URL, "--port", "8080:80", "-p", "127.0.0.1:8443:443", "--name", "shop",
                 "--replicas", "2", "--health-path", "/healthz", "--health-timeout", "45s", "--drain-time", "10s",
                 "--runtime", "podman", "--cmd", "/bin/app --serve", "--proxy-idle-timeout", "0",
                 "--", "-e", "APP_ENV=production", "-v", "/data:/app/data"])
    assert (cfg.mode, cfg.port, cfg.registry) == ("container", ("8080", "127.0.0.1:8443"), URL)
    assert cfg.ready == Ready("notify", 600 + 45 + 60)  # pull + health-timeout + a margin, as a backstop
    assert cfg.graceful_timeout == 10 + 10 + 20         # drain-time + the container's stop + a margin
    assert spec_of(cfg) == {
        "runtime": "podman", "name": "shop", "replicas": 2, "ports": [80, 443], "health_path": "/healthz",
        "health_timeout": 45.0, "drain_time": 10.0, "idle_timeout": 0.0, "cmd": ["/bin/app", "--serve"],
        "args": ["-e", "APP_ENV=production", "-v", "/data:/app/data"], "stop_timeout": 10}


def test_the_ini_says_the_same_and_defaults_follow_dewy(tmp_path):
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nmode = container\nregistry = %s:stable\nport = 8080\nworkdir = %s\nruntime = podman\n"
                   "container-args = --env-file /etc/web.env\n" % (URL, tmp_path))
    cfg = load_ini(str(ini))
    spec = spec_of(cfg)
    assert (spec["name"], spec["replicas"], spec["health_timeout"], spec["drain_time"]) == (
        "web", 1, 30.0, 30.0)  # the image's name; Dewy's defaults
    assert config.BY_NAME["runtime"].default == "docker"  # Dewy's default runtime
    assert spec["ports"] == [0] and spec["args"] == ["--env-file", "/etc/web.env"]  # 0: the image's EXPOSEd port
    assert spec["idle_timeout"] == 300.0


@pytest.mark.parametrize("argv, message", [
    (["--registry", "file:///srv/r", "-p", "8080:80"], "must be an img:// URL in container mode"),
    (["--registry", URL], "--port is required in container mode"),
    (["--registry", URL, "-p", "8080:70000"], "container port 70000"),
    (["--registry", URL, "-p", "8080-8081:80"], "a port range takes no container port"),
    (["--registry", URL, "-p", "8080:80", "--runtime", "lxc"], "--runtime"),
    (["--registry", URL, "-p", "8080:80", "--name", "../x"], "--name"),
    (["--registry", URL, "-p", "8080:80", "--health-path", "health"], "expected a path such as /health"),
    (["--registry", URL, "-p", "8080:80", "--", "--name", "x"], "--name is set by dewy"),
    (["--registry", URL, "-p", "8080:80", "--", "--label", "dewy.app=other"], "labels under dewy. are dewy's own"),
    (["--registry", "img://ghcr.io/Owner/App", "-p", "8080:80"], "bad repository"),
    (["--registry", URL, "-p", "8080:80", "--ready", "delay:1s"], "must be notify[:TIMEOUT] in container mode"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(["container"] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_runtime_that_is_not_installed_is_a_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["container", "--registry", URL, "-p", "8080:80", "--runtime", "podman"]) == 2
    assert capsys.readouterr().err == 'dewy: command line: --runtime = "podman": podman is not installed (not found in PATH)\n'


def test_an_app_in_container_mode_is_refused(tmp_path):
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nmode = container\nregistry = %s\nport = 8080:80\napp = ./server\n" % URL)
    with pytest.raises(ConfigError, match="app = .*must be empty in container mode"):
        load_ini(str(ini))


def test_container_list_shows_dewys_containers_only(oci_world):
    image = "%s/listed:1.0.0" % oci_world.registry.host
    oci_world.push("listed", "1.0.0")
    oci_world.podman("run", "-d", "--name", "listed-1", "--label", "dewy.managed=true", "--label", "dewy.app=listed",
                     "--label", "dewy.version=1.0.0+sha256.abc", "--label", "dewy.generation=4", image)
    oci_world.podman("run", "-d", "--name", "someone-elses", image)
    try:
        run = subprocess.run([sys.executable, "-m", "dewy", "container", "list", "--runtime", "podman"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert lines[0].split() == ["NAME", "APP", "VERSION", "GENERATION", "STATE", "UPSTREAM"]
        assert [line.split()[:5] for line in lines[1:]] == [["listed-1", "listed", "1.0.0+sha256.abc", "4", "running"]]
    finally:
        oci_world.podman("rm", "-f", "--ignore", "-t", "0", "listed-1", "someone-elses", check=False)
    run = subprocess.run([sys.executable, "-m", "dewy", "container", "list", "--runtime", "podman", "--name", "listed"],
                         capture_output=True, text=True, timeout=60)
    assert run.stdout == "No containers found.\n"


def test_settings_are_declared_once():
    names = [s.name for s in config.SETTINGS]
    for name in ("name", "replicas", "health-path", "health-timeout", "drain-time", "runtime", "cmd",
                 "proxy-idle-timeout", "container-args"):
        assert names.count(name) == 1
