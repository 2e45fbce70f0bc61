"""The file and memory caches: atomic writes, TTLs, safe keys."""

import os
import stat

import pytest

from dewy import cache as cache_pkg
from dewy.cache.base import safe_name


@pytest.fixture(params=["file", "memory"])
def cache(request, tmp_path, monkeypatch):
    monkeypatch.delenv("DEWY_CACHEDIR", raising=False)
    return cache_pkg.from_url(request.param, str(tmp_path / "work"))


def test_open_write_then_read(cache):
    with cache.open_write("1.0.0/app.tar.gz") as out:
        out.write(b"hello ")
        out.write(b"world")
    with cache.open_read("1.0.0/app.tar.gz") as fh:
        assert fh.read() == b"hello world"
    assert cache.get("1.0.0/app.tar.gz") == b"hello world"


def test_missing_key(cache):
    assert cache.open_read("nope") is None
    assert cache.get("nope") is None
    cache.delete("nope")  # no error


def test_write_is_invisible_until_the_block_ends(cache):
    cache.set("k", b"old")
    with cache.open_write("k") as out:
        out.write(b"new")
        assert cache.get("k") == b"old"
    assert cache.get("k") == b"new"


def test_failed_write_is_discarded_and_keeps_the_old_value(cache):
    cache.set("k", b"old")
    with pytest.raises(RuntimeError):
        with cache.open_write("k") as out:
            out.write(b"partial")
            raise RuntimeError("download broke")
    assert cache.get("k") == b"old"
    with pytest.raises(RuntimeError):
        with cache.open_write("fresh") as out:
            out.write(b"partial")
            raise RuntimeError("download broke")
    assert cache.open_read("fresh") is None


def test_delete(cache):
    cache.set("k", b"v")
    cache.delete("k")
    assert cache.get("k") is None


def test_ttl(cache):
    cache.set("expired", b"v", ttl=0)
    assert cache.get("expired") is None
    assert cache.open_read("expired") is None
    cache.set("alive", b"v", ttl=3600)
    assert cache.get("alive") == b"v"
    # Setting again without a TTL makes it permanent.
    cache.set("k", b"v", ttl=0)
    cache.set("k", b"w")
    assert cache.get("k") == b"w"
    # So does writing a blob over it.
    cache.set("b", b"v", ttl=0)
    with cache.open_write("b") as out:
        out.write(b"blob")
    assert cache.get("b") == b"blob"


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "..", ".", ".hidden", "a/../../b",
                                 "with space/and\nnewline", "ünïcode/✓", "x" * 1000])
def test_hostile_keys_stay_inside(cache, key):
    cache.set(key, b"v")
    assert cache.get(key) == b"v"
    if hasattr(cache, "dir"):
        names = [n for n in os.listdir(cache.dir) if not n.startswith(".")]
        assert len(names) == 1 and "/" not in names[0] and len(names[0]) <= 255


def test_distinct_keys_never_collide(cache):
    keys = ["a/b", "a%2Fb", "a_b", "a%b", ".a", "%2Ea", "x" * 300, "x" * 300 + "y"]
    for i, key in enumerate(keys):
        cache.set(key, str(i).encode())
    for i, key in enumerate(keys):
        assert cache.get(key) == str(i).encode()


def test_safe_name_is_plain():
    for key in ("../x", "/abs", "a/b", ".", "..", ".dot"):
        name = safe_name(key)
        assert "/" not in name and not name.startswith(".")
    with pytest.raises(ValueError):
        safe_name("")


def test_file_cache_default_dir_and_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("DEWY_CACHEDIR", raising=False)
    cache = cache_pkg.from_url("file", str(tmp_path))
    assert cache.dir == str(tmp_path / ".dewy" / "cache")
    assert stat.S_IMODE(os.stat(cache.dir).st_mode) == 0o700


def test_file_cache_honours_dewy_cachedir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEWY_CACHEDIR", str(tmp_path / "shared"))
    assert cache_pkg.from_url("file", str(tmp_path / "work")).dir == str(tmp_path / "shared")
    # An explicit directory wins over the environment.
    assert cache_pkg.from_url("file://%s/explicit" % tmp_path, str(tmp_path)).dir == str(tmp_path / "explicit")


def test_file_cache_leaves_no_temp_files(tmp_path):
    cache = cache_pkg.from_url("file://%s/c" % tmp_path, str(tmp_path))
    with cache.open_write("a") as out:
        out.write(b"x")
    with pytest.raises(KeyError):
        with cache.open_write("b") as out:
            raise KeyError("boom")
    cache.set("c", b"v", ttl=60)
    assert sorted(n for n in os.listdir(cache.dir) if n != ".ttl") == ["a", "c"]
    assert os.listdir(os.path.join(cache.dir, ".ttl")) == ["c"]


def test_file_cache_is_shared_between_instances(tmp_path):
    one = cache_pkg.from_url("file://%s/c" % tmp_path, str(tmp_path))
    two = cache_pkg.from_url("file://%s/c" % tmp_path, str(tmp_path))
    one.set("k", b"v")
    assert two.get("k") == b"v"


def test_path_is_a_local_file_only_for_the_file_cache(tmp_path):
    file_cache = cache_pkg.from_url("file://%s/c" % tmp_path, str(tmp_path))
    file_cache.set("k", b"v")
    with open(file_cache.path("k"), "rb") as fh:
        assert fh.read() == b"v"
    assert file_cache.path("absent") is None
    memory = cache_pkg.from_url("memory://", str(tmp_path))
    memory.set("k", b"v")
    assert memory.path("k") is None


def test_memory_caches_are_separate(tmp_path):
    one = cache_pkg.from_url("memory", str(tmp_path))
    two = cache_pkg.from_url("memory", str(tmp_path))
    one.set("k", b"v")
    assert two.get("k") is None
