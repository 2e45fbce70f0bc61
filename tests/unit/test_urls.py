"""dewy.urls and the SCHEMES tables of the backend packages."""

import subprocess
import sys

import pytest

from dewy import artifact, cache, notify, registry, urls

TABLE = {"file": {"artifact", "pre-release"}, "memory": set()}


def test_parse_full_url():
    parsed = urls.parse("file:///srv/rel%20eases?pre-release=true&artifact=app.tar.gz")
    assert parsed == urls.ParsedURL("file", "", "/srv/rel eases", {"pre-release": "true", "artifact": "app.tar.gz"})


def test_parse_bare_scheme_and_host():
    assert urls.parse("memory") == urls.ParsedURL("memory", "", "", {})
    assert urls.parse("File").scheme == "file"
    parsed = urls.parse("redis://user:secret@cache.local:6380/0")
    assert (parsed.hostname, parsed.port, parsed.path) == ("cache.local", 6380, "/0")


def test_parse_repeated_key_keeps_last():
    assert urls.parse("file:///x?artifact=a&artifact=b").query == {"artifact": "b"}


def test_check_accepts_known_scheme_and_keys():
    assert urls.check("file:///x?artifact=a", TABLE, "registry").path == "/x"


def test_unsupported_scheme_message():
    with pytest.raises(ValueError) as err:
        urls.check("ftp://host/x", TABLE, "registry")
    assert str(err.value) == 'unsupported scheme "ftp"; supported: file, memory'


def test_unknown_query_key_message():
    with pytest.raises(ValueError) as err:
        urls.check("file:///x?artifcat=a", TABLE, "registry")
    assert str(err.value) == 'unknown query key "artifcat" for file://; supported: artifact, pre-release'


def test_key_not_allowed_for_scheme_without_keys():
    with pytest.raises(ValueError, match=r'unknown query key "x" for memory://; supported: none'):
        urls.check("memory://?x=1", TABLE, "cache")


def test_missing_scheme_names_the_kind():
    with pytest.raises(ValueError, match=r"^registry URL has no scheme; supported: file, memory$"):
        urls.check("/srv/releases", TABLE, "registry")


def test_messages_never_echo_credentials():
    for url in ("ftp://alice:hunter2@host/x", "file://alice:hunter2@/x?token=hunter2"):
        with pytest.raises(ValueError) as err:
            urls.check(url, TABLE, "registry")
        assert "hunter2" not in str(err.value) and "alice" not in str(err.value)


@pytest.mark.parametrize("value,expected", [("true", True), ("1", True), ("yes", True), ("TRUE", True),
                                            ("false", False), ("0", False), ("no", False)])
def test_query_bool(value, expected):
    assert urls.query_bool(urls.parse("file:///x?pre-release=" + value), "pre-release") is expected


def test_query_bool_default_and_bad_value():
    assert urls.query_bool(urls.parse("file:///x"), "pre-release") is False
    with pytest.raises(ValueError, match='bad value "maybe" for query key "pre-release"'):
        urls.query_bool(urls.parse("file:///x?pre-release=maybe"), "pre-release")


@pytest.mark.parametrize("url", ["file:///srv/releases", "file:///srv/r?pre-release=true&artifact=app.zip",
                                 "file://localhost/srv/r"])
def test_registry_validate_url_accepts(url):
    registry.validate_url(url)


@pytest.mark.parametrize("url,message", [
    ("s4://bucket", 'unsupported scheme "s4"; supported: file, ghr, grpc, gs, img, s3'),
    ("file:///x?artefact=a", 'unknown query key "artefact" for file://; supported: artifact, calver, pre-release'),
    ("file:///x?calver=QQ", 'bad value "QQ" for query key "calver"'),
    ("file://relative/path", "absolute path"),
    ("file:///x?pre-release=sometimes", 'bad value "sometimes"'),
    ("file:///x?artifact=../../etc/passwd", 'query key "artifact"'),
])
def test_registry_validate_url_refuses(url, message):
    with pytest.raises(ValueError) as err:
        registry.validate_url(url)
    assert message in str(err.value)


@pytest.mark.parametrize("url", ["file", "file:///var/cache/dewy", "memory", "memory://"])
def test_cache_validate_url_accepts(url):
    cache.validate_url(url)


@pytest.mark.parametrize("url,message", [
    ("redis-ish://x", 'unsupported scheme "redis-ish"; supported: consul, file, gs, memory, redis, rediss, s3, unix'),
    ("file://rel/dir", "absolute path"),
    ("memory://host", "memory cache takes no host"),
])
def test_cache_validate_url_refuses(url, message):
    with pytest.raises(ValueError, match=message):
        cache.validate_url(url)


def test_notifier_urls():
    notify.validate_url("")
    notify.validate_url("log://")
    with pytest.raises(ValueError, match='unsupported scheme "slak"; supported: http, https, log, mail, slack, smtp'):
        notify.validate_url("slak://x")
    assert type(notify.from_url("")).__name__ == "LogNotifier"


def test_artifact_urls():
    artifact.validate_url("file:///srv/x.tar.gz")
    with pytest.raises(ValueError, match="absolute path"):
        artifact.validate_url("file://x.tar.gz")


def test_every_scheme_row_names_an_importable_class():
    for package in (registry, artifact, cache, notify):
        for scheme in package.SCHEMES:
            assert isinstance(urls.load_class(package.SCHEMES, scheme), type)


def test_backend_modules_are_imported_lazily():
    code = ("import sys, dewy.registry, dewy.cache, dewy.notify, dewy.artifact\n"
            "loaded = [m for m in ('dewy.registry.file', 'dewy.cache.file', 'dewy.cache.memory',"
            " 'dewy.notify.log', 'dewy.artifact.file') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)
