"""Every `dewy server` / `dewy assets` command line of Dewy's README.md and docs/pages/*.md (linyows/dewy at
69740c7, English pages; `dewy container` is its own issue) goes through dewy's parser unchanged and must mean
what Dewy documents. The meaning is read from the command line by a small interpreter of Dewy's own flags
(cli.go: go-flags, whole seconds, `-p` repeatable, the app after the options) and compared with the Config.

Three kinds of lines: complete commands; snippets that show only some options (no app command, or no
--registry: Dewy's docs elide them) which the test completes the way the page around them does; and lines that
Dewy itself refuses (flags it does not have), which dewy refuses too, with exit code 2.
"""

from __future__ import annotations

import shlex
import urllib.parse

import pytest
from docopt import docopt

from dewy import cli, config, notify
from dewy.config import ConfigError

APP = "/opt/app/current/app"
REGISTRY = "ghr://owner/repo"

# (page, command line) exactly as the page has it (continuation lines joined).
COMPLETE = [
    ("README.md", "dewy server --registry ghr://linyows/myapp  --notifier slack://general?title=myapp -p 8000 -l info -- /opt/myapp/current/myapp"),
    ("README.md", "dewy assets --registry ghr://linyows/frontend -d /var/www/html -l info"),
    ("README.md", "dewy server --registry ghr://owner/repo -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://owner/repo  --cache s3://ap-northeast-1/dewy-cache/myapp -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://owner/repo  --cache gs://dewy-cache/myapp -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://owner/repo  --cache 's3://ap-northeast-1/dewy-cache/myapp?registry-ttl=30s'  -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://linyows/myapp --slot blue -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://linyows/myapp --slot green -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://myapp/api  --before-deploy-hook \"pg_dump mydb > /backup/$(date +%Y%m%d_%H%M%S).sql\"  --after-deploy-hook \"echo 'Deployment completed' | mail -s 'Deploy Success' admin@example.com\"  -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://myapp/api  --before-deploy-hook \"systemctl stop nginx\"  --after-deploy-hook \"systemctl start nginx && systemctl reload nginx\"  -- /opt/myapp/current/myapp"),
    ("README.md", "dewy assets --registry ghr://myapp/frontend  --after-deploy-hook \"/opt/myapp/current/migrate-db.sh\""),
    ("README.md", "dewy server --registry ghr://linyows/myapp  --log-format json -l info -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://linyows/myapp  --log-format text -l info -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://linyows/myapp  -p 8000,8001,8002 -- /opt/myapp/current/myapp"),
    ("README.md", "dewy server --registry ghr://linyows/myapp  -p 8000-8005 -- /opt/myapp/current/myapp"),
    ("cache-configuration.md", "dewy server --registry ghr://owner/repo -- /opt/app/current/app"),
    ("cache-configuration.md", "dewy server --registry ghr://owner/repo  --cache s3://ap-northeast-1/dewy-cache/myapp -- /opt/app/current/app"),
    ("cache-configuration.md", "dewy server --registry ghr://owner/repo  --cache gs://dewy-cache/myapp -- /opt/app/current/app"),
    ("cache-configuration.md", "dewy server --registry ghr://myorg/app --port 8080 -- /opt/app/current/app"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --cache s3://ap-northeast-1/mybucket/myapp -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --cache gs://mybucket/myapp -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --cache 's3://ap-northeast-1/mybucket/myapp?registry-ttl=30s'  -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --cache 'gs://mybucket/myapp?registry-ttl=30s'  -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo -- ./current/myapp"),
    ("cache.md", "dewy server --registry ghr://myorg/myapp -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --interval 60 -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --cache s3://ap-northeast-1/dewy-cache/myapp  --interval 30 -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --interval 5s  --log-format text -- ./current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --cache s3://ap-northeast-1/dewy-cache/myapp  --interval 60 -- /opt/myapp/current/myapp"),
    ("cache.md", "dewy server --registry ghr://owner/repo  --cache gs://dewy-cache/myapp  --interval 60 -- /opt/myapp/current/myapp"),
    ("deployment-hooks.md", "dewy server --registry ghr://owner/repo  --before-deploy-hook \"scripts/pre-check.sh\"  -- /opt/myapp/current/myapp"),
    ("deployment-hooks.md", "dewy server --registry ghr://owner/repo  --after-deploy-hook \"scripts/post-deploy-validation.sh\"  -- /opt/myapp/current/myapp"),
    ("deployment-hooks.md", "dewy server --registry ghr://owner/repo  --before-deploy-hook \"echo 'Starting deployment'\"  --after-deploy-hook \"echo 'Deployment completed'\"  -- /opt/myapp/current/myapp"),
    ("deployment-hooks.md", "dewy server --registry ghr://owner/repo  --before-deploy-hook \"systemctl stop nginx && backup-db.sh\"  --after-deploy-hook \"systemctl start nginx && send-notification.sh\"  -- /opt/myapp/current/myapp"),
    ("deployment-hooks.md", "dewy server --registry ghr://owner/repo  --before-deploy-hook \"/opt/scripts/pre-deploy.sh\"  --after-deploy-hook \"/opt/scripts/post-deploy.sh\"  -- /opt/myapp/current/myapp"),
    ("deployment-hooks.md", "dewy server --registry ghr://company/myapp  --before-deploy-hook \"scripts/production-backup.sh\"  --after-deploy-hook \"scripts/production-validation.sh\"  --notifier \"slack://ops-alerts\"  -- /opt/myapp/current/myapp"),
    ("faq.md", "dewy server --registry ghr://owner/repo1 --port 8001 -- /opt/app1/current/app"),
    ("faq.md", "dewy server --registry ghr://owner/repo2 --port 8002 -- /opt/app2/current/app"),
    ("getting-started.md", "dewy server --registry ghr://owner/repo --port 8000 -- /opt/myapp/current/myapp"),
    ("getting-started.md", "dewy assets --registry ghr://owner/frontend-assets"),
    ("getting-started.md", "dewy server  --registry ghr://myorg/myapp  --port 8080  --log-level info  -- /opt/myapp/current/myapp"),
    ("installation.md", "dewy server --registry ghr://myorg/myapp --notifier slack://deployments?title=myapp --port 8000 --log-level info -- /opt/myapp/current/myapp"),
    ("multi-port.md", "dewy server --registry ghr://myorg/webapp --port 8080,8443,8090 -- /opt/webapp/current/webapp"),
    ("multi-port.md", "dewy server --registry ghr://myorg/webapp  --port 8080,8090,9090  -- /opt/webapp/current/webapp"),
    ("multi-port.md", "dewy server --registry ghr://myorg/devapp  --port 8080,8081  -- /opt/devapp/current/devapp --prod-port=8080 --debug-port=8081"),
    ("multi-port.md", "dewy server --registry ghr://myorg/app -p 8080 -- /opt/app/current/app"),
    ("multi-port.md", "dewy server --registry ghr://myorg/app -p 8080 -p 8081 -p 9090 -- /opt/app/current/app"),
    ("multi-port.md", "dewy server --registry ghr://myorg/app --port 8080,8081,9090 -- /opt/app/current/app"),
    ("multi-port.md", "dewy server --registry ghr://myorg/app --port 8080-8085 -- /opt/app/current/app"),
    ("multi-port.md", "dewy server --registry ghr://myorg/app  --port 80,443  --port 8080-8085  -p 9090  -- /opt/app/current/app"),
    ("multi-port.md", "dewy server  --log-level debug  --log-format text  --registry ghr://myorg/myapp  --port 8080,8081  -- /opt/myapp/current/myapp"),
    ("multi-port.md", "dewy server  --log-level info  --log-format json  --registry ghr://myorg/myapp  --port 8080,8090  -- /opt/myapp/current/myapp"),
    ("multi-port.md", "dewy server  --log-level error  --log-format json  --registry ghr://myorg/myapp  --port 8080,8443,9090  -- /opt/myapp/current/myapp"),
    ("multi-port.md", "dewy server --log-level debug --registry ghr://myorg/app --port 8080,8081,9090 -- /opt/app/current/app"),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier slack://deployments  -- /opt/myapp/current/myapp"),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"slack://deploy-notify?title=MyApp&url=https://github.com/owner/repo&thread=true\"  -- /opt/app/current/app"),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier smtp://smtp.gmail.com:587/admin@example.com  -- /opt/myapp/current/myapp"),
    ("reference.md", "dewy server --registry ghr://owner/repo -- /opt/worker/current/worker"),
    ("reference.md", "dewy server --registry ghr://owner/repo --calver YYYY.0M.0D.MICRO -- /opt/app/current/app"),
    ("reference.md", "dewy server --registry ghr://owner/repo --calver YYYY.0M.MICRO -- /opt/app/current/app"),
    ("reference.md", "dewy server  --registry ghr://owner/repo  --port 8080  -- /opt/app/current/myapp"),
    ("registry.md", "dewy server --registry ghr://linyows/myapp -- /opt/myapp/current/myapp"),
    ("signal-handling.md", "dewy server --registry ghr://myorg/myapp --port 8080 -- /opt/myapp/current/myapp"),
    ("signal-handling.md", "dewy server --log-level debug --registry ghr://myorg/myapp --port 8080 -- /opt/myapp/current/myapp"),
    ("structured-logging.md", "dewy server --log-format text --log-level info --registry ghr://myorg/app --port 8080 -- /opt/app/current/app"),
    ("structured-logging.md", "dewy server --log-format json --log-level info --registry ghr://myorg/app --port 8080 -- /opt/app/current/app"),
    ("structured-logging.md", "dewy server --log-level info --registry ghr://myorg/app --port 8080 -- /opt/app/current/app"),
    ("structured-logging.md", "dewy server -l debug --registry ghr://myorg/app --port 8080 -- /opt/app/current/app"),
    ("structured-logging.md", "dewy server --log-format json --registry ghr://myorg/app --port 8080 -- /opt/app/current/app"),
    ("structured-logging.md", "dewy server -f text --registry ghr://myorg/app --port 8080 -- /opt/app/current/app"),
    ("versioning.md", "dewy server --registry ghr://owner/repo --slot blue -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry ghr://owner/repo --slot green -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry ghr://owner/repo --calver YYYY.0M.0D.MICRO -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry \"s3://ap-northeast-1/releases/myapp\" --calver YYYY.0M.MICRO -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry \"ghr://owner/repo?pre-release=true\" --calver YYYY.0M.0D.MICRO -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry ghr://company/myapp  --interval 300s  --log-format json -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry \"ghr://company/myapp?pre-release=true\"  --interval 60s  --notifier \"slack://staging-deploy?title=MyApp+Staging\"  -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry ghr://company/myapp --slot blue  --interval 60s  --notifier \"slack://production-deploy?title=MyApp+Blue\"  -- /opt/myapp/current/myapp"),
    ("versioning.md", "dewy server --registry ghr://company/myapp --slot green  --interval 60s  --notifier \"slack://production-deploy?title=MyApp+Green\"  -- /opt/myapp/current/myapp"),
    # issue 19: the flags Dewy gained after that snapshot (PRs #482, #490), the app command without --, telemetry
    ("issue 19", "dewy server --registry ghr://owner/repo -p 8000 /opt/app/current/app"),
    ("issue 19", "dewy server --registry ghr://owner/repo --max-backoff-interval 300 -- /opt/app/current/app"),
    ("issue 19", "dewy server --registry ghr://owner/repo -p 8000 --health-path /health --health-timeout 10 -- /opt/app/current/app"),
    ("issue 19", "dewy server --registry ghr://owner/repo -p 8000 --health-path /health --no-rollback -- /opt/app/current/app"),
    ("telemetry.md", "dewy server --registry ghr://owner/repo --telemetry --otlp-endpoint localhost:4317 --otlp-insecure -- /opt/app/current/app"),
]

# Snippets that show a flag or two and elide the rest: completed with an app command (server) or --registry.
SNIPPETS = [
    ("artifact.md", "dewy server --registry \"ghr://owner/repo?artifact=myapp-server.tar.gz\""),
    ("artifact.md", "dewy server --registry ghr://owner/repo --log-level debug"),
    ("artifact.md", "dewy server --registry \"ghr://owner/repo?artifact=specific-file.tar.gz\""),
    ("installation.md", "dewy server --registry ghr://owner/repo --log-level debug --log-format json"),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"slack://deployments?title=MyApp&quiet=true\""),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"slack://deployments?title=MyApp\""),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"slack://deployments?title=MyApp&url=https://github.com/owner/repo\""),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"slack://prod-deploy?title=MyApp&url=https://myapp.example.com\""),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"smtp://smtp.gmail.com:587/admin@example.com?username=sender@gmail.com&password=app-password&from=sender@gmail.com&subject=Deploy+Notification\""),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"smtp://smtp.gmail.com:587/admin@example.com?subject=MyApp+Deploy\""),
    ("notifier.md", "dewy server --registry ghr://owner/repo  --notifier \"slack://prod-deploy?title=MyApp+Production\""),
    ("notifier.md", "dewy server --registry \"ghr://owner/repo?pre-release=true\"  --notifier \"slack://staging-deploy?title=MyApp+Staging\""),
    ("notifier.md", "dewy server --registry \"ghr://owner/repo?pre-release=true\"  --notifier \"slack://dev-deploy?title=MyApp+Development\""),
    ("reference.md", "dewy server --cache file:///tmp/dewy-cache -- /opt/app/current/app"),
    ("reference.md", "dewy server --cache s3://ap-northeast-1/dewy-cache/myapp -- /opt/app/current/app"),
    ("reference.md", "dewy server --cache gs://dewy-cache/myapp -- /opt/app/current/app"),
    ("reference.md", "dewy server --cache 's3://ap-northeast-1/dewy-cache/myapp?registry-ttl=30s' -- /opt/app/current/app"),
    ("reference.md", "dewy server --notifier slack://webhook-url -- /opt/app/current/app"),
    ("reference.md", "dewy server --port 9090 -- /opt/app/current/app"),
    ("reference.md", "dewy server --interval 300 -- /opt/app/current/app"),
    ("reference.md", "dewy server --registry ghr://owner/repository --calver YYYY.0M.0D.MICRO"),
    ("registry.md", "dewy server --registry \"ghr://linyows/myapp?pre-release=true\""),
    ("registry.md", "dewy server --registry \"ghr://linyows/myapp?artifact=myapp-server.tar.gz\""),
    ("registry.md", "dewy server --registry \"ghr://linyows/myapp?pre-release=true&artifact=myapp-server.tar.gz\""),
    ("registry.md", "dewy server --registry s3://ap-northeast-1/my-releases/myapp"),
    ("registry.md", "dewy server --registry gs://my-releases-bucket/myapp"),
    ("registry.md", "dewy server --registry grpc://registry.example.com:9000"),
    ("registry.md", "dewy server --registry \"grpc://localhost:9000?no-tls=true\""),
    ("registry.md", "dewy server --registry ghr://myorg/myapp"),
    ("registry.md", "dewy server --registry \"ghr://myorg/myapp?pre-release=true\""),
    ("versioning.md", "dewy server --registry ghr://owner/repo"),
    ("versioning.md", "dewy server --registry \"ghr://owner/repo?pre-release=true\""),
    ("versioning.md", "dewy server --registry ghr://owner/repo --calver YYYY.0M.0D.MICRO"),
    ("versioning.md", "dewy server --registry \"s3://ap-northeast-1/releases/myapp?pre-release=true\""),
    ("versioning.md", "dewy server --registry \"s3://ap-northeast-1/releases/myapp\" --calver YYYY.0M.MICRO"),
    ("versioning.md", "dewy server --log-format json -l debug --registry ghr://owner/repo"),
    ("versioning.md", "dewy server --registry \"ghr://owner/repo?pre-release=false\"  # Stable only"),
]

# Lines Dewy's own parser refuses (flags cli.go does not have; placeholders): dewy refuses them too (exit 2).
NOT_DEWY_EITHER = [
    ("deployment-hooks.md", "dewy server --registry <registry-url>  --before-deploy-hook \"<command>\"  --after-deploy-hook \"<command>\"  -- <application-command>"),
    ("reference.md", "dewy server --artifact s3://bucket/path/to/artifact -- /opt/app/current/app"),
    ("reference.md", "dewy server --verbose -- /opt/app/current/app"),
    ("reference.md", "dewy server  --registry ghr://mycompany/myapp  --artifact s3://mybucket/artifacts/  --cache s3://ap-northeast-1/dewy-cache/myapp  --notifier slack://hooks.slack.com/services/xxx/yyy/zzz  --port 8080  --interval 300  --keeptime"),
    ("reference.md", "dewy assets --registry ghr://mycompany/myapp --verbose"),
    ("reference.md", "dewy server  --registry ghr://mycompany/myapp-dev  --interval 60  --port 8080  --verbose  -- /opt/app/dev/myapp --env development"),
]

HELP = ["dewy server --registry ghr://linyows/dewy --help", "dewy server --help"]


# --- Dewy's meaning of a command line (cli.go), independent of dewy's parser ------------------------------

DEWY_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "error": "error"}
DEWY_OPTIONS = {  # long and short spellings -> meaning key (all take a value except the switches)
    "--registry": "registry", "--cache": "cache", "-c": "cache", "--notifier": "notifier", "--slot": "slot",
    "-s": "slot", "--port": "port", "-p": "port", "--interval": "interval", "-i": "interval",
    "--log-level": "log_level", "-l": "log_level", "--log-format": "log_format", "-f": "log_format",
    "--before-deploy-hook": "before_deploy_hook", "--after-deploy-hook": "after_deploy_hook", "--calver": "calver",
    "-d": "dir", "--max-backoff-interval": "max_backoff", "--health-path": "health_path",
    "--health-timeout": "health_timeout", "--otlp-endpoint": "otlp_endpoint",
}
SWITCHES = {"--no-rollback": "no_rollback", "--telemetry": "telemetry", "--otlp-insecure": "otlp_insecure"}


def dewy_meaning(argv: list[str]) -> dict:
    """What Dewy makes of argv: options anywhere before `--`, the first bare word after the command starts the app."""
    meaning = {"command": argv[0], "port": [], "app": []}
    i = 1
    while i < len(argv):
        token = argv[i]
        if token == "--":
            meaning["app"] = argv[i + 1:]
            break
        if token in SWITCHES:
            meaning[SWITCHES[token]] = True
        elif token in DEWY_OPTIONS:
            key, value = DEWY_OPTIONS[token], argv[i + 1]
            if key == "port":
                meaning["port"].append(value)
            else:
                meaning[key] = value
            i += 1
        else:
            meaning["app"] = argv[i:]  # go-flags: the first non-option and what follows (no flags among them)
            break
        i += 1
    return meaning


def expand_ports(values: list[str]) -> tuple:
    """Dewy's parsePorts: comma lists and ranges."""
    ports = []
    for value in values:
        for part in value.split(","):
            low, _, high = part.partition("-")
            ports += [str(p) for p in range(int(low), int(high or low) + 1)]
    return tuple(ports)


def seconds(text: str) -> float:
    """Dewy's interval (whole seconds; the docs also write `60s`, which dewy's durations take)."""
    return float(text[:-1]) if text.endswith("s") else float(text)


def parse(argv: list[str], cwd: str = "/srv"):
    """argv through dewy's own parser (cli.command_doc + options_from_args) into a Config."""
    args = docopt(cli.command_doc(argv[0]), argv, default_help=False)
    return config.from_options(cli.options_from_args(args), base_dir=cwd)


def check(argv: list[str]) -> None:
    """dewy's Config for argv means what Dewy documents."""
    meaning = dewy_meaning(argv)
    cfg = parse(argv)
    registry = meaning["registry"]
    if meaning.get("calver"):
        assert urllib.parse.parse_qs(urllib.parse.urlsplit(cfg.registry).query)["calver"] == [meaning["calver"]]
        registry = cfg.registry.replace("&calver=", "?calver=").split("?calver=")[0] if "?" not in registry else \
            registry
    assert cfg.registry.startswith(registry), (cfg.registry, registry)
    assert cfg.mode == meaning["command"]
    assert cfg.port == expand_ports(meaning["port"])
    assert cfg.cache == meaning.get("cache", "file")
    assert cfg.notifier == meaning.get("notifier", "")
    assert cfg.slot == meaning.get("slot", "")
    assert cfg.interval == seconds(meaning.get("interval", "10"))
    assert cfg.log_level == DEWY_LEVELS[meaning.get("log_level", "info")]  # dewy's default is info, Dewy's error
    assert cfg.log_format == meaning.get("log_format", "text")
    assert cfg.before_deploy_hook == meaning.get("before_deploy_hook", "")
    assert cfg.after_deploy_hook == meaning.get("after_deploy_hook", "")
    if cfg.mode == "server":
        app = meaning["app"]
        assert cfg.app[0].endswith(app[0].lstrip(".")) and list(cfg.app[1:]) == app[1:], (cfg.app, app)
    if "dir" in meaning:
        assert cfg.dir == meaning["dir"]
    if "max_backoff" in meaning:
        assert cfg.poll_backoff_max == float(meaning["max_backoff"])
    if "health_path" in meaning:
        assert cfg.ready == config.Ready("http", float(meaning.get("health_timeout", 30)), meaning["health_path"])
    assert cfg.rollback == ("off" if meaning.get("no_rollback") else "on")
    if meaning.get("telemetry"):
        assert cfg.metrics == "127.0.0.1:17539"  # Dewy's admin API port
    assert cfg.otlp_endpoint == meaning.get("otlp_endpoint", "")
    assert cfg.otlp_insecure == ("true" if meaning.get("otlp_insecure") else "false")
    for url in notify.split(cfg.notifier):  # each notifier URL builds, with Dewy's meaning of its keys
        notifier = notify.from_url(url)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "subject" in query:
            assert notifier.subject == query["subject"][0]  # the whole subject, `+` a space as in Go's url
        if "title" in query:
            assert notifier.title == query["title"][0]


def words(line: str) -> list[str]:
    """The shell words of a documented line, without `dewy` and a trailing comment."""
    argv = shlex.split(line, comments=True)
    assert argv[0] == "dewy"
    return argv[1:]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-test")  # notifiers build as they would on a configured host
    monkeypatch.delenv("DEWY_CACHEDIR", raising=False)


@pytest.mark.parametrize("page, line", COMPLETE, ids=["%s:%d" % (p, i) for i, (p, _) in enumerate(COMPLETE)])
def test_dewy_command_lines_mean_what_dewy_documents(page, line):
    check(words(line))


@pytest.mark.parametrize("page, line", SNIPPETS, ids=["%s:%d" % (p, i) for i, (p, _) in enumerate(SNIPPETS)])
def test_dewy_snippets_completed_as_their_page_does(page, line):
    argv = words(line)
    if "--registry" not in argv:
        argv[1:1] = ["--registry", REGISTRY]
    if argv[0] == "server" and "--" not in argv:
        argv += ["--", APP]
    check(argv)


@pytest.mark.parametrize("page, line", NOT_DEWY_EITHER, ids=[p for p, _ in NOT_DEWY_EITHER])
def test_lines_dewy_refuses_are_refused(page, line, capsys):
    assert cli.main(words(line)) == 2
    assert capsys.readouterr().err.startswith("dewy: ")


@pytest.mark.parametrize("line", HELP)
def test_help(line, capsys):
    assert cli.main(words(line)) == 0  # Dewy exits 1 after its help; 0 is what scripts and shells expect
    assert "--registry URL" in capsys.readouterr().out


def test_missing_registry_is_exit_2_not_dewys_1(capsys):
    """Dewy: `Error: --registry is not set` and exit 1. dewy exits 2 (a bad command line), which the systemd
    unit's RestartPreventExitStatus=2 keeps from restarting in a loop."""
    assert cli.main(["server", "--", APP]) == 2
    assert "--registry is required" in capsys.readouterr().err


def test_bad_dewy_flag_values_are_one_line_errors(capsys):
    for argv, message in [
        (["server", "--registry", REGISTRY, "--max-backoff-interval", "5m", "--", APP], "expected whole seconds"),
        (["server", "--registry", REGISTRY, "--max-backoff-interval", "1", "--poll-backoff-max", "1s", "--", APP],
         "both given"),
        (["server", "--registry", REGISTRY + "?calver=YYYY", "--calver", "YY", "--", APP], "already says calver"),
        (["server", "--registry", REGISTRY, "--calver", "QQQ", "--", APP], "calver"),
        (["server", "--registry", REGISTRY, "-p", "8000", "--health-path", "/h", "--ready", "delay", "--", APP],
         "both given"),
    ]:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


# cli.go's flags for server/assets, PRs #482/#490's, and the env vars Dewy reads (os.Getenv in its code).
DEWY_FLAGS = ["--registry", "--port", "--interval", "--cache", "--notifier", "--before-deploy-hook",
              "--after-deploy-hook", "--slot", "--calver", "--log-level", "--log-format", "--max-backoff-interval",
              "--health-path", "--health-timeout", "--no-rollback", "--telemetry", "--otlp-endpoint",
              "--otlp-insecure", "--version", "--help"]
DEWY_ENV = ["SLACK_TOKEN", "MAIL_USERNAME", "MAIL_PASSWORD", "MAIL_FROM", "GITHUB_TOKEN", "GH_TOKEN", "GITHUB_API_URL",
            "GITHUB_ENDPOINT", "GITHUB_ARTIFACT", "GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID",
            "GITHUB_APP_PRIVATE_KEY", "AWS_ENDPOINT_URL", "DEWY_CACHEDIR"]
DEWY_URL_KEYS = ["artifact=", "pre-release=", "calver=", "region=", "endpoint=", "no-tls=", "registry-ttl=",
                 "title=", "url=", "quiet=", "thread=", "username=", "password=", "from=", "subject=", "tls="]


def test_the_readme_guide_names_every_dewy_flag_env_var_and_url_key():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    guide = readme[readme.index("## Coming from Dewy"):readme.index("## Performance")]
    missing = [name for name in DEWY_FLAGS + DEWY_ENV + DEWY_URL_KEYS if name not in guide]
    assert not missing, missing
