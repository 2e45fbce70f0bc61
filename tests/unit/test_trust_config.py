"""Config trust rules (SECURITY.md): trigger secrets from the environment, and no config error ever prints a
notifier URL's path or query (a Slack or Teams webhook's path is its credential)."""

import pytest

from dewy.config import ConfigError, from_options

BASE = {"registry": "file:///srv/releases", "app": ["app"]}


@pytest.mark.parametrize("notifier", ["htps://hooks.slack.com/services/T0/B0/SECRETPATH",
                                      "http://10.0.0.1/hook/SECRETPATH?token=SECRETQUERY",
                                      "log://, ftp://example.com/SECRETPATH"])
def test_a_bad_notifier_error_never_prints_its_path(notifier):
    with pytest.raises(ConfigError) as info:
        from_options(dict(BASE, notifier=notifier))
    assert "SECRET" not in str(info.value), str(info.value)


@pytest.mark.parametrize("var, attr", [("DEWY_TRIGGER_TOKEN", "trigger_token"),
                                       ("DEWY_TRIGGER_SECRET", "trigger_secret")])
def test_trigger_secrets_come_from_the_environment(monkeypatch, var, attr):
    monkeypatch.delenv("DEWY_TRIGGER_TOKEN", raising=False)
    monkeypatch.delenv("DEWY_TRIGGER_SECRET", raising=False)
    with pytest.raises(ConfigError, match="DEWY_TRIGGER_TOKEN"):
        from_options(dict(BASE, trigger="127.0.0.1:9465"))
    monkeypatch.setenv(var, "from-the-environment")
    assert getattr(from_options(dict(BASE, trigger="127.0.0.1:9465")), attr) == "from-the-environment"
    # The ini's own value wins over the environment's.
    assert getattr(from_options(dict(BASE, trigger="127.0.0.1:9465", **{var.lower()[5:].replace("_", "-"): "ini"})),
                   attr) == "ini"
