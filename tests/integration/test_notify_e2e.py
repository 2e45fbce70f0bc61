"""Notifications, structured logs and metrics through a real dewy-master (poller included).

One run: Slack (the stand-in, production slack-sdk client), a signed webhook and mail (aiosmtpd) all get
the events of deploys, a registry outage, a refusal, a rollback, a failing hook and the stop; Prometheus metrics are
scraped over HTTP after a deploy and after the refusal; secrets planted in the config and the environment
appear nowhere dewy writes (logs, status file, `dewy status`, audit log, refused versions, messages)."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from dewy.demo.demo import clean_environment, free_port
from helpers import audit_entries, wait_until
from notifystubs import MailServer, SlackStub, WebhookServer

SLACK_TOKEN = "xoxb-planted-slack-token-4242"
HOOK_SECRET = "planted-hook-secret-9191"
MAIL_PASSWORD = "planted-mail-password-7373"
GITHUB_TOKEN = "ghp_plantedGithubToken000111222"
AWS_SECRET = "planted/aws+secret/access/key/5555"
SECRETS = (SLACK_TOKEN, HOOK_SECRET, MAIL_PASSWORD, GITHUB_TOKEN, AWS_SECRET)

# Fails for 1.3.0 only, printing a secret of its environment: its output tail goes into the notification.
HOOK = 'if [ "$DEWY_VERSION" = 1.3.0 ]; then echo "migrating with $SLACK_TOKEN"; echo "migration failed"; exit 3; fi'


def dewy_status(workdir, *flags) -> str:
    """What `dewy status` prints (any exit code: 3 once the master is gone)."""
    out = subprocess.run([sys.executable, "-m", "dewy", "status", "--workdir", str(workdir), *flags],
                         capture_output=True, text=True, timeout=30, env=clean_environment())
    return out.stdout + out.stderr


def scrape(port: int) -> str:
    """GET /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one metric sample in the Prometheus text format (None when absent)."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and ",".join(sorted((match[2] or "").split(","))) == want:
            return float(match[3])
    return None


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_events_metrics_and_no_secret_anywhere(make_master, registry, tmp_path):
    metrics_port = free_port()
    with SlackStub(tokens=(SLACK_TOKEN,), channels=("deploys",)) as slack, \
            WebhookServer(secret=HOOK_SECRET) as hook, \
            MailServer(users={"dewy": MAIL_PASSWORD}) as mail:
        notifier = ", ".join([
            "slack://deploys?title=shop&thread=true",
            hook.url(query="team=web&secret=%s" % HOOK_SECRET),
            "mail://dewy:%s@127.0.0.1:%d/ops@example.com?tls=false&quiet=true" % (MAIL_PASSWORD, mail.port),
        ])
        env = {"SLACK_TOKEN": SLACK_TOKEN, "SLACK_API_URL": slack.api_url, "GITHUB_TOKEN": GITHUB_TOKEN,
               "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
        registry.publish("1.0.0")
        master = make_master(env=env, notifier=notifier, metrics="127.0.0.1:%d" % metrics_port,
                             before_deploy_hook=HOOK, log_format="json")
        master.start(wait_version="1.0.0")
        master.deploy("1.1.0")
        hook.wait_for(lambda: [e for e in hook.events if e["event"] == "deployed" and e["version"] == "1.1.0"])

        # Metrics after a deploy.
        text = scrape(metrics_port)
        assert sample(text, "dewy_deploys_total", result="deployed") == 2
        assert sample(text, "dewy_release_info", version="1.1.0") == 1
        assert sample(text, "dewy_app_restarts_total", reason="deploy") == 2
        assert sample(text, "dewy_downloaded_bytes_total") > 0
        assert sample(text, "dewy_registry_requests_total", result="ok") > 0
        assert sample(text, "dewy_last_successful_poll_timestamp_seconds") > 1.7e9
        assert sample(text, "dewy_deploy_duration_seconds_count") == 2
        # Dewy's names and labels beside ours (its dashboards keep working)
        assert sample(text, "dewy_deployments_total", command="server") == 2
        assert sample(text, "dewy_deployment_duration_seconds_count", command="server") == 2
        assert sample(text, "dewy_deployment_duration_seconds_bucket", command="server", le="600.0") == 2
        assert sample(text, "dewy_server_restarts_total", reason="deploy") == 2
        assert sample(text, "dewy_deployment_errors_total", command="server") is None  # no error yet

        # A registry outage: unreachable once, reachable again once.
        moved = tmp_path / "registry-away"
        os.rename(registry.root, moved)
        hook.wait_for(lambda: "registry-unreachable" in [e["event"] for e in hook.events])
        os.rename(moved, registry.root)
        hook.wait_for(lambda: "registry-reachable" in [e["event"] for e in hook.events])

        # A corrupt release is refused; 1.1.0 keeps serving.
        registry.publish_bytes("1.2.0", b"this is not a tarball")
        hook.wait_for(lambda: [e for e in hook.events if e["event"] == "refused"])
        text = scrape(metrics_port)
        assert sample(text, "dewy_deploys_total", result="refused") == 1
        assert sample(text, "dewy_deployment_errors_total", command="server") == 1
        assert sample(text, "dewy_release_info", version="1.1.0") == 1

        # A release that crash-loops after its deploy is rolled back to 1.1.0.
        registry.publish("1.2.5", behaviour="crash-after:0.3")
        hook.wait_for(lambda: [e for e in hook.events if e["event"] == "rolled-back"], timeout=60)
        # The master starts the previous release after telling the poller: its `spawned` may come a bit later.
        text = wait_until(lambda: (lambda t: sample(t, "dewy_app_restarts_total", reason="rollback") == 1 and t)(
            scrape(metrics_port)), 10, "the rollback's restart in the metrics")
        assert sample(text, "dewy_rollbacks_total") == 1
        assert sample(text, "dewy_deploys_total", result="rolled_back") == 1
        assert sample(text, "dewy_app_restarts_total", reason="crash") >= 1

        # A failing before-deploy-hook (printing a secret): hook-failed with the tail of its output, once.
        registry.publish("1.3.0")
        hook.wait_for(lambda: [e for e in hook.events if e["event"] == "hook-failed"])
        assert master.status()["version"] == "1.1.0"
        status_text = dewy_status(master.workdir) + dewy_status(master.workdir, "--json")
        assert "1.3.0" in status_text and "hook" in status_text, "the failure shows in dewy status"
        assert master.stop() == 0
        hook.wait_for(lambda: "stopped" in [e["event"] for e in hook.events])

        names = [e["event"] for e in hook.events]
        assert names[0] == "started" and names[-1] == "stopped"
        for name in ("downloaded", "deployed", "registry-unreachable", "registry-reachable", "refused", "hook-failed"):
            assert name in names, names
        assert names.count("hook-failed") == 1, "a repeated identical failure is notified once"
        assert all(r["verified"] and "secret" not in r["query"] and r["query"]["team"] == "web"
                   for r in hook.requests)
        by_name = {e["event"]: e for e in hook.events}
        deployed = [e for e in hook.events if e["event"] == "deployed" and e["version"] == "1.1.0"][0]
        assert deployed["previous_version"] == "1.0.0" and deployed["generation"] == 2
        assert deployed["switch_seconds"] > 0 and "1.0.0 -> 1.1.0 (generation 2" in deployed["text"]
        assert {e["host"] for e in hook.events} == {os.uname().nodename}
        assert "migration failed" in by_name["hook-failed"]["text"]
        assert "graceful stop" in by_name["stopped"]["text"]
        assert "1.2.0 refused on" in by_name["refused"]["text"] and by_name["refused"]["error"]
        rolled = by_name["rolled-back"]
        assert (rolled["version"], rolled["to_version"]) == ("1.2.5", "1.1.0") and "crashed" in rolled["error"]

        # Slack: the same events, titled, one thread per release.
        slack_texts = [m["text"] for m in slack.messages]
        assert len(slack_texts) == len(hook.events) and all("shop" in t for t in slack_texts)
        threaded = [m for m in slack.messages if m["thread_ts"]]
        assert threaded, "thread=true: later messages about a release reply in its thread"
        # Mail with quiet=true: deploys, the refusal and the errors only (no started/downloaded/stopped).
        subjects = [m[2].decode().split("Subject: ", 1)[1].split("\r\n", 1)[0] for m in mail.messages]
        assert subjects and not any("started" in s or "downloaded" in s or "stopped" in s for s in subjects)
        assert any("refused" in s for s in subjects) and all(m[3] == "dewy" for m in mail.messages)

        # Structured log fields: one deploy followed through master and poller.
        records = [json.loads(line) for line in master.log_text().splitlines() if line.startswith("{")]
        poller_deployed = [r for r in records if r.get("logger") == "dewy.poller" and r["msg"].startswith("deployed 1.1.0")]
        master_started = [r for r in records if r.get("logger", "").startswith("dewy.master")
                          and r.get("version") == "1.1.0" and r.get("generation") == 2]
        assert poller_deployed and poller_deployed[0]["generation"] == 2 and poller_deployed[0]["version"] == "1.1.0"
        assert master_started and all(isinstance(r["pid"], int) for r in records)
        assert [r for r in records if r.get("version") == "1.2.0" and "refusing" in r["msg"]]

        # Secrets: nowhere dewy wrote or sent anything.
        written = {
            "master log": master.log_text(),
            "status file": json.dumps(master.status()),
            "dewy status": status_text,
            "audit log": json.dumps(audit_entries(master.workdir)),
            "refused versions": (master.workdir / ".dewy" / "refused.json").read_text(),
            "slack messages": json.dumps(slack.messages) + "".join(r["body"].decode() for r in slack.requests),
            "webhook bodies": "".join(r["body"].decode() + r["path"] + json.dumps(r["query"]) for r in hook.requests),
            "mails": "".join(m[2].decode() for m in mail.messages),
        }
        # The hook does not even get SLACK_TOKEN any more (dewy's credentials stay with dewy: test_app_secrets.py).
        assert "migrating with" in written["master log"], "the hook's output was logged"
        for where, text in written.items():
            for secret in SECRETS:
                assert secret not in text, "%s leaked into the %s" % (secret, where)


def test_started_once_per_master_not_per_poller_and_stopped_with_why(make_master, registry):
    """A poller the master restarts (killed here) does not announce "dewy started" again; the stop says why."""
    with WebhookServer() as hook:
        registry.publish("1.0.0")
        master = make_master(notifier=hook.url()).start(wait_version="1.0.0")
        hook.wait_for(lambda: "deployed" in hook.names())
        first = master.status()["poller_pid"]
        os.kill(first, signal.SIGKILL)
        master.wait_for(lambda s: s.get("poller_pid") not in (None, first), 30, "a new poller")
        master.deploy("1.1.0")  # the new poller's events: a second "started" would come before this deploy's
        hook.wait_for(lambda: [e for e in hook.events if e["event"] == "deployed" and e["version"] == "1.1.0"])
        assert master.stop() == 0
        hook.wait_for(lambda: "stopped" in hook.names())
        names = hook.names()
        assert names.count("started") == 1 and names[0] == "started" and names[-1] == "stopped", names
        stopped = hook.events[-1]
        assert stopped["version"] == "1.1.0" and "graceful stop (SIGTERM/SIGINT)" in stopped["text"]
