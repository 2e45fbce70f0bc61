"""dewy's credentials stay with dewy: the app generations and the hooks (code from the release) do not get the
registry, cloud, notifier, cache-key or trigger secrets from the master's environment, unless `app-env-keep`
names them; the app's stderr copied to the journal masks their values (SECURITY.md, "Leaked tokens")."""

from __future__ import annotations

from dewy import secrets

SECRETS = {
    "GITHUB_TOKEN": "ghp_secretgithubtoken123", "GH_TOKEN": "ghp_othertoken456", "AWS_ACCESS_KEY_ID": "AKIAKEPTFORAPP",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-key-789", "AWS_SESSION_TOKEN": "aws-session-abc",
    "GOOGLE_APPLICATION_CREDENTIALS": "/etc/dewy/gcs.json", "SLACK_TOKEN": "xoxb-slack-token-1",
    "MAIL_PASSWORD": "mail-password-2", "CONSUL_HTTP_TOKEN": "consul-token-3", "DEWY_CACHE_KEY": "fleet-key-4",
    "DEWY_TRIGGER_TOKEN": "trigger-token-5", "DEWY_TRIGGER_SECRET": "trigger-secret-6",
    "DEWY_WEBHOOK_SECRET": "webhook-secret-7", "GITHUB_APP_PRIVATE_KEY": "-----BEGIN KEY-----x",
}


def test_the_app_and_hooks_get_no_credentials_unless_kept(make_master, registry):
    registry.publish("1.0.0")
    master = make_master(env=dict(SECRETS, APP_SETTING="kept"), **{
        "app-env-keep": "AWS_ACCESS_KEY_ID",
        "before-deploy-hook": "env > hook-env.txt"})
    master.start(wait_version="1.0.0")
    pid = master.status()["app_pids"][0]
    with open("/proc/%d/environ" % pid, "rb") as fh:  # what anything running as the app's user can read
        env = dict(item.decode().partition("=")[::2] for item in fh.read().split(b"\0") if item)
    assert env.get("APP_SETTING") == "kept"  # the rest of the environment is passed on
    assert env.get("AWS_ACCESS_KEY_ID") == SECRETS["AWS_ACCESS_KEY_ID"]  # named in app-env-keep
    leaked = sorted(name for name in SECRETS if name in env and name != "AWS_ACCESS_KEY_ID")
    assert leaked == [], leaked
    hook_env = (master.workdir / "hook-env.txt").read_text()
    for name, value in SECRETS.items():
        if name != "AWS_ACCESS_KEY_ID":
            assert value not in hook_env, name
    assert "APP_SETTING=kept" in hook_env
    assert set(SECRETS) <= set(secrets.CREDENTIAL_VARS)  # the README lists the same names


def test_the_readme_lists_every_credential_variable():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [name for name in secrets.CREDENTIAL_VARS if "`%s`" % name not in readme] == []
