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


def test_every_test_security_md_names_exists():
    """SECURITY.md backs its promises with named tests: each file and test function it names is there."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = (root / "SECURITY.md").read_text()
    sources = "\n".join(p.read_text() for p in (root / "tests").rglob("test_*.py"))
    files = set(re.findall(r"`(tests/[\w/]+\.py)", text))
    names = set(re.findall(r"(?:::|`)(test_\w+)`", text))
    assert files and names
    assert [f for f in sorted(files) if not (root / f).exists()] == []
    assert [n for n in sorted(names) if "def %s(" % n not in sources] == []


def test_cache_key_in_the_ini_is_refused_naming_the_environment_variable(tmp_path):
    from dewy.config import load_ini

    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file:///srv/releases\napp = app\ncache-key = s3cret-fleet-key\n")
    with pytest.raises(ConfigError) as info:
        load_ini(str(ini))
    assert "DEWY_CACHE_KEY" in str(info.value) and "s3cret" not in str(info.value), str(info.value)
