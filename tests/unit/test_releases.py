"""Unit tests for dewy.releases: safe unpacking, release naming, the current symlink, prune, manifest.

Every archive is built for real in tmp_path with tarfile/zipfile. Each attack test snapshots tmp_path
before and after: a refused archive must leave exactly the same files behind (nothing written outside
the release, no release directory, no .tmp directory).
"""

import datetime
import io
import json
import logging
import os
import re
import stat
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from archives import (corrupt_zip_crc, make_tar, make_zip, tar_dir, tar_file, tar_hardlink, tar_special,
                      tar_symlink, zip_entry)
from dewy import releases
from dewy.releases import Manifest, ReleaseError, UnsafeArchive

RELEASE_NAME = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")

TAR_MODES = {"tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz", "tar": "w:",
             "tbz2": "w:bz2", "txz": "w:xz"}  # the short forms Dewy unpacks too


def zip_info(path, name):
    """The ZipInfo of one entry of the zip at path."""
    with zipfile.ZipFile(path) as archive:
        return archive.getinfo(name)


def snapshot(root):
    """Every path under root (relative), with symlink targets, to compare before/after."""
    result = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            result.add((rel, os.readlink(full) if os.path.islink(full) else None))
    return result


@pytest.fixture
def env(tmp_path):
    """A workdir with releases/, and an 'outside' directory an attack would like to write into."""
    work = tmp_path / "work"
    rel = work / "releases"
    rel.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not touch")

    class Env:
        pass

    e = Env()
    e.tmp, e.work, e.releases, e.outside = tmp_path, work, rel, outside
    return e


def assert_refused_cleanly(env, artifact, name, exc=UnsafeArchive, match=None, **limits):
    """install() (with limits: max_size, max_files) must raise exc and leave tmp_path exactly as it was."""
    before = snapshot(env.tmp)
    with pytest.raises(exc, match=match) as info:
        releases.install(artifact, name, str(env.releases), **limits)
    assert snapshot(env.tmp) == before
    assert os.listdir(env.releases) == []
    assert (env.outside / "secret").read_text() == "do not touch"
    return info.value


# --- archive_kind --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind",
    [
        ("app.tar.gz", "tar.gz"), ("APP.TAR.GZ", "tar.gz"), ("app.tgz", "tgz"), ("app.tar.bz2", "tar.bz2"),
        ("app.tar.xz", "tar.xz"), ("app.tar", "tar"), ("app.zip", "zip"), ("app", "file"),
        ("app_linux_amd64.txz", "txz"), ("APP.TBZ2", "tbz2"),
        ("app.gz", "file"), ("app_linux_amd64", "file"), ("app.exe", "file"),
    ],
)
def test_archive_kind(name, kind):
    assert releases.archive_kind(name) == kind


def test_archive_suffixes_cover_every_kind():
    assert set(releases.ARCHIVE_SUFFIXES.values()) == {"tar.gz", "tgz", "tar.bz2", "tar.xz", "tar", "zip",
                                                         "tbz2", "txz"}


# --- install: formats ----------------------------------------------------------------------------

APP_MEMBERS = [
    tar_dir("app"),
    tar_dir("app/bin"),
    tar_file("app/bin/run", b"#!/bin/sh\necho hi\n", 0o755),
    tar_file("app/README", b"readme", 0o644),
    tar_symlink("app/run", "bin/run"),
]


@pytest.mark.parametrize("kind", sorted(TAR_MODES))
def test_every_tar_format_unpacks(env, kind):
    artifact = make_tar(env.tmp / f"app.{kind}", APP_MEMBERS, TAR_MODES[kind])
    path = releases.install(artifact, f"app.{kind}", str(env.releases))
    check_app_layout(env, path)


def test_zip_unpacks_with_modes_and_symlinks(env):
    artifact = make_zip(env.tmp / "app.zip", [
        zip_entry("app/", mode=0o755, kind=stat.S_IFDIR),
        zip_entry("app/bin/run", b"#!/bin/sh\necho hi\n", 0o755),
        zip_entry("app/README", b"readme", 0o644),
        zip_entry("app/run", b"bin/run", 0o777, stat.S_IFLNK),
    ])
    path = releases.install(artifact, "app.zip", str(env.releases))
    check_app_layout(env, path)


def check_app_layout(env, path):
    assert os.path.isabs(path)
    assert os.path.dirname(path) == str(env.releases)
    assert RELEASE_NAME.match(os.path.basename(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    # A single top-level directory is kept as it is, not flattened.
    assert sorted(os.listdir(path)) == ["app"]
    run = os.path.join(path, "app", "bin", "run")
    assert Path(run).read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.join(path, "app", "README")).st_mode) == 0o644
    assert os.readlink(os.path.join(path, "app", "run")) == "bin/run"
    assert os.listdir(env.releases) == [os.path.basename(path)]  # no .tmp left


def test_zip_without_unix_modes_gets_plain_files(env):
    with zipfile.ZipFile(env.tmp / "dos.zip", "w") as archive:
        archive.writestr("dir/file.txt", b"x")
    # zipfile always stores a unix mode; zero external_attr in the central directory, as Windows tools do.
    data = bytearray((env.tmp / "dos.zip").read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 38 : central + 42] = bytes(4)
    (env.tmp / "dos.zip").write_bytes(bytes(data))
    assert zip_info(env.tmp / "dos.zip", "dir/file.txt").external_attr == 0
    path = releases.install(str(env.tmp / "dos.zip"), "dos.zip", str(env.releases))
    assert stat.S_IMODE(os.stat(os.path.join(path, "dir", "file.txt")).st_mode) == 0o644


def test_bare_file_installed_as_executable(env):
    artifact = env.tmp / "app_linux_amd64"
    artifact.write_bytes(b"\x7fELF-ish binary")
    path = releases.install(str(artifact), "app_linux_amd64", str(env.releases))
    installed = os.path.join(path, "app_linux_amd64")
    assert os.listdir(path) == ["app_linux_amd64"]
    assert Path(installed).read_bytes() == b"\x7fELF-ish binary"
    assert stat.S_IMODE(os.stat(installed).st_mode) == 0o755


def test_bare_file_name_must_be_plain(env):
    artifact = env.tmp / "blob"
    artifact.write_bytes(b"x")
    assert_refused_cleanly(env, str(artifact), "../blob", exc=ReleaseError)


def test_mislabelled_compression_is_detected_from_content(env):
    # A gzipped tarball published as ".tar" still unpacks: compression is sniffed, not guessed.
    artifact = make_tar(env.tmp / "app.tar", APP_MEMBERS, "w:gz")
    path = releases.install(artifact, "app.tar", str(env.releases))
    check_app_layout(env, path)


def test_exec_bits_kept_and_setuid_setgid_stripped(env):
    artifact = make_tar(env.tmp / "modes.tar.gz", [
        tar_file("suid", b"x", 0o4755),
        tar_file("sgid", b"x", 0o2750),
        tar_file("sticky_world_writable", b"x", 0o1777),
        tar_file("exec", b"x", 0o700),
        tar_file("plain", b"x", 0o640),
        tar_dir("dir", 0o2775),
    ])
    path = releases.install(artifact, "modes.tar.gz", str(env.releases))
    mode = lambda name: stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode)  # noqa: E731
    assert mode("suid") == 0o755
    assert mode("sgid") == 0o750
    assert mode("sticky_world_writable") == 0o755
    assert mode("exec") == 0o700
    assert mode("plain") == 0o640
    assert mode("dir") == 0o755


def test_zip_setuid_stripped(env):
    artifact = make_zip(env.tmp / "suid.zip", [zip_entry("tool", b"x", 0o4755)])
    path = releases.install(artifact, "suid.zip", str(env.releases))
    assert stat.S_IMODE(os.stat(os.path.join(path, "tool")).st_mode) == 0o755


def test_tar_of_dot_and_inner_dotdot_is_fine(env):
    src = env.tmp / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("f")
    artifact = env.tmp / "dot.tar.gz"
    with tarfile.open(artifact, "w:gz") as archive:
        archive.add(src, arcname=".")  # members "." and "./sub/f", like `tar -C src .`
        info = tarfile.TarInfo("sub/../g")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"g"))
    path = releases.install(str(artifact), "dot.tar.gz", str(env.releases))
    assert Path(os.path.join(path, "sub", "f")).read_text() == "f"
    assert Path(os.path.join(path, "g")).read_text() == "g"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755  # the "." member does not set the release's mode


def test_links_inside_the_release_are_allowed(env):
    artifact = make_tar(env.tmp / "links.tar.gz", [
        tar_dir("real"),
        tar_symlink("lib", "real"),
        tar_file("lib/through", b"t"),           # written through an in-tree symlink dir
        tar_hardlink("hard", "real/through"),
        tar_symlink("dangling", "nothing/here"),  # dangling but inside: allowed
        tar_symlink("real/up", "../real"),
    ])
    path = releases.install(artifact, "links.tar.gz", str(env.releases))
    assert Path(os.path.join(path, "real", "through")).read_text() == "t"
    assert os.stat(os.path.join(path, "hard")).st_ino == os.stat(os.path.join(path, "real", "through")).st_ino
    assert os.readlink(os.path.join(path, "dangling")) == "nothing/here"


def test_later_member_replaces_earlier_symlink_without_following_it(env):
    artifact = make_tar(env.tmp / "replace.tar.gz", [
        tar_file("target", b"original"),
        tar_symlink("f", "target"),
        tar_file("f", b"replacement"),
    ])
    path = releases.install(artifact, "replace.tar.gz", str(env.releases))
    assert not os.path.islink(os.path.join(path, "f"))
    assert Path(os.path.join(path, "f")).read_text() == "replacement"
    assert Path(os.path.join(path, "target")).read_text() == "original"


def test_large_member_is_streamed(env):
    payload = os.urandom(256 * 1024) * 12  # 3 MiB, several copy buffers
    artifact = make_tar(env.tmp / "big.tar.gz", [tar_file("big", payload)])
    path = releases.install(artifact, "big.tar.gz", str(env.releases))
    assert os.path.getsize(os.path.join(path, "big")) == len(payload)
    assert Path(os.path.join(path, "big")).read_bytes() == payload


# --- install: attacks ----------------------------------------------------------------------------


def test_tar_dotdot_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_file("ok", b"ok"), tar_file("../evil", b"x")])
    err = assert_refused_cleanly(env, artifact, "evil.tar.gz", match=r"\.\./evil")
    assert "'..'" in str(err)


def test_tar_nested_dotdot_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_file("a/b/../../../outside/evil", b"x")])
    assert_refused_cleanly(env, artifact, "evil.tar.gz")


def test_tar_absolute_path_refused(env):
    target = env.outside / "evil"
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_file(str(target), b"x")])
    err = assert_refused_cleanly(env, artifact, "evil.tar.gz", match="absolute")
    assert str(target) in str(err)


def test_tar_absolute_tmp_path_refused(env):
    # The classic "/tmp/evil": refused before anything is written (checked by name, never created).
    name = f"/tmp/dewy-test-evil-{os.getpid()}-{time.monotonic_ns()}"
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_file(name, b"x")])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match="absolute")
    assert not os.path.lexists(name)


def test_tar_symlink_to_absolute_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_symlink("etc", "/etc")])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match="etc")


def test_tar_symlink_dotdot_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_dir("sub"), tar_symlink("sub/x", "../../x")])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match=r"\.\./\.\./x")


def test_tar_member_through_earlier_symlink_dir_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [
        tar_symlink("link", str(env.outside)),
        tar_file("link/evil", b"x"),
    ])
    assert_refused_cleanly(env, artifact, "evil.tar.gz")
    assert not (env.outside / "evil").exists()


def test_tar_member_through_symlink_made_escaping_later_refused(env):
    # "c -> x/.." looks harmless while x does not exist; "x -> ." then makes c point at releases/.
    artifact = make_tar(env.tmp / "evil.tar.gz", [
        tar_symlink("c", "x/.."),
        tar_symlink("x", "."),
        tar_file("c/evil", b"x"),
    ])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match="c/evil")


def test_tar_symlink_made_escaping_by_later_member_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_symlink("c", "x/.."), tar_symlink("x", ".")])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match="once unpacked")


def test_tar_hardlink_escaping_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_hardlink("stolen", "../../outside/secret")])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match="hard link")


def test_tar_hardlink_absolute_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [tar_hardlink("stolen", str(env.outside / "secret"))])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match="hard link")


def test_tar_hardlink_through_escaping_symlink_refused(env):
    artifact = make_tar(env.tmp / "evil.tar.gz", [
        tar_symlink("x", "."),
        tar_hardlink("stolen", "x/../../../outside/secret"),
    ])
    assert_refused_cleanly(env, artifact, "evil.tar.gz", match="hard link")


@pytest.mark.parametrize("kind", ["chr", "blk", "fifo"])
def test_tar_device_and_fifo_refused(env, kind):
    artifact = make_tar(env.tmp / "dev.tar.gz", [tar_file("ok", b"ok"), tar_special("null", kind)])
    assert_refused_cleanly(env, artifact, "dev.tar.gz", match="device")


def test_zip_dotdot_refused(env):
    artifact = make_zip(env.tmp / "evil.zip", [zip_entry("ok", b"ok"), zip_entry("../evil", b"x")])
    assert_refused_cleanly(env, artifact, "evil.zip", match=r"\.\./evil")


def test_zip_absolute_refused(env):
    target = str(env.outside / "evil")
    artifact = make_zip(env.tmp / "evil.zip", [zip_entry(target, b"x")])
    assert zip_info(artifact, target).filename == target  # the archive really holds it
    assert_refused_cleanly(env, artifact, "evil.zip", match="absolute")


def test_zip_symlink_escaping_refused(env):
    artifact = make_zip(env.tmp / "evil.zip", [
        zip_entry("link", b"../../outside", 0o777, stat.S_IFLNK),
        zip_entry("link/evil", b"x"),
    ])
    assert_refused_cleanly(env, artifact, "evil.zip", match="symlink")


def test_zip_symlink_absolute_refused(env):
    artifact = make_zip(env.tmp / "evil.zip", [zip_entry("etc", b"/etc", 0o777, stat.S_IFLNK)])
    assert_refused_cleanly(env, artifact, "evil.zip", match="absolute")


def test_zip_device_refused(env):
    artifact = make_zip(env.tmp / "dev.zip", [zip_entry("null", b"", 0o644, stat.S_IFCHR)])
    assert_refused_cleanly(env, artifact, "dev.zip", match="device")


def test_refusal_leaves_existing_releases_alone(env):
    good = make_tar(env.tmp / "good.tar.gz", [tar_file("v1", b"1")])
    first = releases.install(good, "good.tar.gz", str(env.releases))
    evil = make_tar(env.tmp / "evil.tar.gz", [tar_file("../evil", b"x")])
    with pytest.raises(UnsafeArchive):
        releases.install(evil, "evil.tar.gz", str(env.releases))
    assert os.listdir(env.releases) == [os.path.basename(first)]
    assert Path(os.path.join(first, "v1")).read_text() == "1"


# --- install: corrupt archives -------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(TAR_MODES))
def test_truncated_tarball_refused(env, kind):
    payload = os.urandom(64 * 1024)
    whole = make_tar(env.tmp / f"whole.{kind}", [tar_file("a", payload), tar_file("b", payload)], TAR_MODES[kind])
    data = Path(whole).read_bytes()
    os.unlink(whole)
    cut = env.tmp / f"cut.{kind}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert_refused_cleanly(env, str(cut), f"cut.{kind}", exc=releases.Truncated, match=f"corrupt archive cut.{kind}")


def test_tar_cut_at_member_boundary_refused(env):
    whole = make_tar(env.tmp / "whole.tar", [tar_file("a", b"a" * 512), tar_file("b", b"b" * 512)], "w:")
    data = Path(whole).read_bytes()
    os.unlink(whole)
    cut = env.tmp / "cut.tar"
    cut.write_bytes(data[:1024])  # exactly header + data of "a": tarfile alone would not notice
    assert_refused_cleanly(env, str(cut), "cut.tar", exc=releases.Truncated, match="corrupt archive cut.tar")


def test_a_zip_cut_short_is_truncated(env):
    """A zip whose end (the central directory) is missing is Truncated: the poller retries it while young."""
    whole = env.tmp / "whole.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        archive.writestr("a", os.urandom(4096))
    cut = env.tmp / "cut.zip"
    cut.write_bytes(whole.read_bytes()[:2000])
    assert_refused_cleanly(env, str(cut), "cut.zip", exc=releases.Truncated, match="corrupt archive cut.zip")


@pytest.mark.parametrize("name", ["junk.tar.gz", "junk.tgz", "junk.tar.bz2", "junk.tar.xz", "junk.tar", "junk.zip"])
def test_garbage_archive_refused(env, name):
    junk = env.tmp / name
    junk.write_bytes(b"this is not an archive at all\n" * 50)
    err = assert_refused_cleanly(env, str(junk), name, exc=ReleaseError, match=f"corrupt archive {name}")
    assert not isinstance(err, (UnsafeArchive, releases.Truncated))  # wrong bytes, not a copy still under way


def test_empty_archive_file_refused(env):
    empty = env.tmp / "empty.tar.gz"
    empty.write_bytes(b"")
    assert_refused_cleanly(env, str(empty), "empty.tar.gz", exc=ReleaseError, match="corrupt archive")


def test_zip_with_bad_crc_refused(env):
    artifact = make_zip(env.tmp / "crc.zip", [zip_entry("f", b"A" * 4096)])
    corrupt_zip_crc(artifact, "f")
    assert_refused_cleanly(env, artifact, "crc.zip", exc=ReleaseError, match="corrupt archive crc.zip")


def test_encrypted_zip_refused(env):
    artifact = make_zip(env.tmp / "enc.zip", [zip_entry("f", b"secret")])
    data = bytearray(Path(artifact).read_bytes())
    data[6] |= 0x01  # local header: "encrypted" flag
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 0x01  # central directory: same flag
    Path(artifact).write_bytes(bytes(data))
    assert_refused_cleanly(env, artifact, "enc.zip", exc=ReleaseError, match="enc.zip")


# --- install: size and entry limits (max-release-size, max-release-files) --------------------------

LIMIT_KINDS = sorted(TAR_MODES) + ["zip", "file"]


def make_artifact(env, kind, files):
    """An artifact of kind (a tar kind, zip, or a bare file) holding files {name: bytes}; returns (path, name)."""
    if kind == "file":
        (data,) = files.values()
        path = env.tmp / "blob"
        path.write_bytes(data)
        return str(path), "blob"
    name = "app." + kind
    if kind == "zip":
        return make_zip(env.tmp / name, [zip_entry(n, d) for n, d in files.items()]), name
    return make_tar(env.tmp / name, [tar_file(n, d) for n, d in files.items()], TAR_MODES[kind]), name


@pytest.mark.parametrize("kind", LIMIT_KINDS)
def test_release_of_exactly_max_size_unpacks(env, kind):
    artifact, name = make_artifact(env, kind, {"a": b"a" * 3000, "b": b"b" * 1000} if kind != "file" else
                                   {"blob": b"x" * 4000})
    path = releases.install(artifact, name, str(env.releases), max_size=4000, max_files=2 if kind != "file" else 1)
    assert sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) == 4000


@pytest.mark.parametrize("kind", LIMIT_KINDS)
def test_release_one_byte_over_max_size_refused(env, kind):
    # Each member is under the limit: only their sum is over it, so what counts is what is written in all.
    files = {"a": b"a" * 3000, "b": b"b" * 1001} if kind != "file" else {"blob": b"x" * 4001}
    artifact, name = make_artifact(env, kind, files)
    err = assert_refused_cleanly(env, artifact, name, exc=releases.TooLarge, max_size=4000)
    assert str(err) == "release %s unpacks to more than 4 kB (max-release-size)" % name
    assert isinstance(err, UnsafeArchive)  # a bad release (refused), not an I/O error (retried)


def test_gzip_bomb_stops_at_the_limit(env):
    # 64 MiB of zeros compress to ~64 KiB; the limit (1 MiB) is what stops it, not the end of the data.
    artifact = make_tar(env.tmp / "bomb.tar.gz", [tar_file("zeros", bytes(64 << 20))])
    assert os.path.getsize(artifact) < 1 << 20
    err = assert_refused_cleanly(env, artifact, "bomb.tar.gz", exc=releases.TooLarge, max_size=1 << 20)
    assert "more than 1 MiB (max-release-size)" in str(err)


@pytest.mark.parametrize("kind", sorted(TAR_MODES) + ["zip"])
def test_release_over_max_files_refused(env, kind):
    files = {"f%d" % i: b"x" for i in range(11)}
    artifact, name = make_artifact(env, kind, files)
    err = assert_refused_cleanly(env, artifact, name, exc=releases.TooLarge, max_files=10)
    assert str(err) == ("release %s unpacks to more than 10 files, directories and links (max-release-files)"
                        % name)
    path = releases.install(artifact, name, str(env.releases), max_files=11)
    assert len(os.listdir(path)) == 11


def test_directories_and_links_count_as_files(env):
    artifact = make_tar(env.tmp / "app.tar.gz", APP_MEMBERS)  # 2 dirs, 2 files, 1 symlink
    assert_refused_cleanly(env, artifact, "app.tar.gz", exc=releases.TooLarge, max_files=4)
    check_app_layout(env, releases.install(artifact, "app.tar.gz", str(env.releases), max_files=5))


def test_zip_claiming_more_than_max_size_refused_before_writing(env):
    artifact = make_zip(env.tmp / "big.zip", [zip_entry("big", bytes(2 << 20))])
    assert_refused_cleanly(env, artifact, "big.zip", exc=releases.TooLarge, max_size=1 << 20)


def test_zip_entry_count_read_from_the_end_record(env):
    small = make_zip(env.tmp / "small.zip", [zip_entry("f%d" % i) for i in range(3)])
    assert releases._zip_entry_count(small) == 3
    # More than 65535 entries: only the zip64 end record holds the count.
    with zipfile.ZipFile(env.tmp / "many.zip", "w") as archive:
        for i in range(70000):
            archive.writestr("f%d" % i, b"")
    assert releases._zip_entry_count(str(env.tmp / "many.zip")) == 70000
    assert_refused_cleanly(env, str(env.tmp / "many.zip"), "many.zip", exc=releases.TooLarge, max_files=69999)
    junk = env.tmp / "junk.zip"
    junk.write_bytes(b"not a zip")
    assert releases._zip_entry_count(str(junk)) is None


def test_tar_header_bigger_than_16_mib_refused(env):
    # tarfile would hold a pax header in memory whole: a huge one is refused while being read.
    path = env.tmp / "pax.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (17 << 20)}
        archive.addfile(info, io.BytesIO(b""))
    assert_refused_cleanly(env, str(path), "pax.tar.gz", exc=ReleaseError, match="member header is larger than 16 MiB")


def test_tar_with_a_bomb_after_its_end_refused(env):
    plain = Path(make_tar(env.tmp / "app.tar", [tar_file("a", b"a")], "w:")).read_bytes()
    import gzip
    path = env.tmp / "tail.tar.gz"
    path.write_bytes(gzip.compress(plain + bytes(20 << 20)))
    os.unlink(env.tmp / "app.tar")
    assert_refused_cleanly(env, str(path), "tail.tar.gz", exc=ReleaseError,
                           match="data after the end-of-archive marker is larger than 16 MiB")


def test_missing_artifact_raises_release_error(env):
    with pytest.raises(ReleaseError, match="cannot unpack"):
        releases.install(str(env.tmp / "nope.tar.gz"), "nope.tar.gz", str(env.releases))
    assert os.listdir(env.releases) == []


# --- install: naming -----------------------------------------------------------------------------


def stamps_around_now():
    now = datetime.datetime.now(datetime.timezone.utc)
    return [(now + datetime.timedelta(seconds=s)).strftime("%Y%m%dT%H%M%SZ") for s in range(0, 3)]


def test_release_dir_named_by_utc_timestamp(env):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    artifact = make_tar(env.tmp / "a.tar.gz", [tar_file("f", b"x")])
    path = releases.install(artifact, "a.tar.gz", str(env.releases))
    after = datetime.datetime.now(datetime.timezone.utc)
    stamp = datetime.datetime.strptime(os.path.basename(path), "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    assert before <= stamp <= after


def test_release_name_collision_gets_suffix(env):
    stamps = stamps_around_now()
    for stamp in stamps:
        (env.releases / stamp).mkdir()
    artifact = make_tar(env.tmp / "a.tar.gz", [tar_file("f", b"x")])
    path = releases.install(artifact, "a.tar.gz", str(env.releases))
    assert os.path.basename(path) in {f"{s}-002" for s in stamps}
    for stamp in stamps:  # the existing releases were not touched
        assert os.listdir(env.releases / stamp) == []
    # A pending .tmp of the same name (another unpack in progress) is skipped too.
    for stamp in stamps:
        (env.releases / f"{stamp}-003.tmp").mkdir()
        (env.releases / f"{stamp}-002").mkdir(exist_ok=True)
    path = releases.install(artifact, "a.tar.gz", str(env.releases))
    assert os.path.basename(path) in {f"{s}-004" for s in stamps}
    # A name prune freed is never taken again within that second: the new release must sort after the others.
    for stamp in stamps:
        os.rmdir(env.releases / stamp)
    path = releases.install(artifact, "a.tar.gz", str(env.releases))
    assert os.path.basename(path) in {f"{s}-005" for s in stamps}
    name = os.path.basename(path)
    same_second = sorted(n for n in os.listdir(env.releases) if n.startswith(name[:16]) and not n.endswith(".tmp"))
    assert same_second[-1] == name, same_second


def test_install_relative_releases_dir_returns_absolute(env, monkeypatch):
    monkeypatch.chdir(env.work)
    artifact = make_tar(env.tmp / "a.tar.gz", [tar_file("f", b"x")])
    path = releases.install(artifact, "a.tar.gz", "releases")
    assert os.path.isabs(path)
    assert os.path.dirname(path) == str(env.releases)


def test_install_creates_missing_releases_dir(tmp_path):
    artifact = make_tar(tmp_path / "a.tar.gz", [tar_file("f", b"x")])
    path = releases.install(artifact, "a.tar.gz", str(tmp_path / "w" / "releases"))
    assert os.path.isfile(os.path.join(path, "f"))


# --- switch_link / read_link ---------------------------------------------------------------------


def test_switch_link_relative_inside_workdir(env):
    a = env.releases / "20260101T000000Z"
    b = env.releases / "20260102T000000Z"
    a.mkdir()
    b.mkdir()
    current = env.work / "current"
    releases.switch_link(str(current), str(a))
    assert os.readlink(current) == os.path.join("releases", "20260101T000000Z")
    assert releases.read_link(str(current)) == os.path.realpath(a)
    releases.switch_link(str(current), str(b))
    assert os.readlink(current) == os.path.join("releases", "20260102T000000Z")
    assert releases.read_link(str(current)) == os.path.realpath(b)
    assert sorted(os.listdir(env.work)) == ["current", "releases"]  # no .tmp-<pid> left behind


def test_switch_link_absolute_outside_tree(env):
    elsewhere = env.tmp / "elsewhere"
    elsewhere.mkdir()
    link = env.work / "current"
    releases.switch_link(str(link), str(elsewhere))
    assert os.readlink(link) == str(elsewhere)
    assert releases.read_link(str(link)) == os.path.realpath(elsewhere)


def test_switch_link_replaces_stale_tmp_link(env):
    target = env.releases / "20260101T000000Z"
    target.mkdir()
    link = env.work / "current"
    os.symlink("nowhere", f"{link}.tmp-{os.getpid()}")
    releases.switch_link(str(link), str(target))
    assert os.readlink(link) == os.path.join("releases", "20260101T000000Z")
    assert not os.path.lexists(f"{link}.tmp-{os.getpid()}")


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_switch_link_refuses_real_dir_or_file(env, kind):
    target = env.releases / "20260101T000000Z"
    target.mkdir()
    link = env.work / "current"
    if kind == "dir":
        link.mkdir()
        (link / "keep").write_text("mine")
    else:
        link.write_text("mine")
    with pytest.raises(ReleaseError, match="not a symlink"):
        releases.switch_link(str(link), str(target))
    assert not link.is_symlink()
    assert (link / "keep" if kind == "dir" else link).read_text() == "mine"


def test_switch_link_is_never_missing_for_readers(env):
    a = env.releases / "20260101T000000Z"
    b = env.releases / "20260102T000000Z"
    a.mkdir()
    b.mkdir()
    link = str(env.work / "current")
    releases.switch_link(link, str(a))
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(releases.read_link(link))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(300):
            releases.switch_link(link, str(b if i % 2 == 0 else a))
    finally:
        stop.set()
        thread.join()
    assert None not in seen
    assert seen <= {os.path.realpath(a), os.path.realpath(b)}


def test_read_link_absent_dangling_or_not_a_link(env):
    assert releases.read_link(str(env.work / "current")) is None
    os.symlink("releases/gone", env.work / "current")
    assert releases.read_link(str(env.work / "current")) is None
    assert releases.read_link(str(env.releases)) is None


# --- prune ---------------------------------------------------------------------------------------


def make_releases(releases_dir, names):
    for name in names:
        (releases_dir / name).mkdir()
        (releases_dir / name / "f").write_text(name)
    return [str(releases_dir / name) for name in names]


def test_prune_keeps_newest_and_protected(env):
    names = [f"202601{day:02d}T000000Z" for day in range(1, 11)]
    paths = make_releases(env.releases, names)
    (env.releases / "not-a-release").mkdir()
    removed = releases.prune(str(env.releases), 3, protect=[paths[0]])
    assert sorted(removed) == sorted(paths[1:7])
    assert sorted(os.listdir(env.releases)) == sorted([names[0], *names[7:], "not-a-release"])


def test_prune_protect_compares_real_paths(env):
    paths = make_releases(env.releases, ["20260101T000000Z", "20260102T000000Z", "20260103T000000Z"])
    os.symlink("releases/20260101T000000Z", env.work / "current")
    removed = releases.prune(str(env.releases), 1, protect=[str(env.work / "current")])
    assert removed == [paths[1]]


def test_prune_orders_collision_suffixes_numerically(env):
    names = ["20260101T000000Z", "20260101T000000Z-2", "20260101T000000Z-9", "20260101T000000Z-10"]
    make_releases(env.releases, names)
    removed = releases.prune(str(env.releases), 2, protect=[])
    assert sorted(os.path.basename(p) for p in removed) == ["20260101T000000Z", "20260101T000000Z-2"]


def test_prune_removes_only_stale_tmp_dirs(env):
    stale = env.releases / "20260101T000000Z.tmp"
    fresh = env.releases / "20260102T000000Z.tmp"
    for path in (stale, fresh):
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "f").write_text("x")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    removed = releases.prune(str(env.releases), 5, protect=[])
    assert removed == [str(stale)]
    assert fresh.exists()


def test_prune_handles_read_only_dirs(env):
    paths = make_releases(env.releases, ["20260101T000000Z", "20260102T000000Z"])
    os.chmod(paths[0], 0o500)
    assert releases.prune(str(env.releases), 1, protect=[]) == [paths[0]]
    assert not os.path.exists(paths[0])


def test_prune_missing_dir_and_bad_keep(env):
    assert releases.prune(str(env.tmp / "none"), 3, protect=[]) == []
    with pytest.raises(ValueError):
        releases.prune(str(env.releases), -1, protect=[])


def test_prune_keep_zero_spares_only_protected(env):
    paths = make_releases(env.releases, ["20260101T000000Z", "20260102T000000Z"])
    assert releases.prune(str(env.releases), 0, protect=[paths[1]]) == [paths[0]]


# --- Manifest ------------------------------------------------------------------------------------


def test_manifest_round_trip(env):
    manifest = Manifest(str(env.work))
    assert manifest.entries() == {}
    assert manifest.get("20260101T000000Z") is None
    release = str(env.releases / "20260101T000000Z")
    manifest.record(release, "1.2.3", "v1.2.3", "app_linux_amd64.tar.gz", "ab" * 32)
    manifest.record("20260102T000000Z", "1.2.4+blue", "v1.2.4+blue", "app.zip", None)

    again = Manifest(str(env.work))  # a fresh object reads what the first one wrote
    entry = again.get(release)
    assert entry["version"] == "1.2.3"
    assert entry["tag"] == "v1.2.3"
    assert entry["artifact"] == "app_linux_amd64.tar.gz"
    assert entry["sha256"] == "ab" * 32
    datetime.datetime.fromisoformat(entry["installed_at"])
    assert again.get("20260101T000000Z") == entry  # keyed by directory name
    assert again.version_of("20260102T000000Z") == "1.2.4+blue"
    assert again.version_of("nope") is None
    assert sorted(again.entries()) == ["20260101T000000Z", "20260102T000000Z"]

    again.forget(release)
    again.forget("never-recorded")
    assert sorted(Manifest(str(env.work)).entries()) == ["20260102T000000Z"]

    path = env.work / ".dewy" / "releases.json"
    assert json.loads(path.read_text())["20260102T000000Z"]["tag"] == "v1.2.4+blue"
    assert stat.S_IMODE(os.stat(env.work / ".dewy").st_mode) == 0o700


def test_manifest_entries_are_copies(env):
    manifest = Manifest(str(env.work))
    manifest.record("20260101T000000Z", "1.0.0", "v1.0.0", "a", None)
    manifest.entries()["20260101T000000Z"]["version"] = "hacked"
    manifest.get("20260101T000000Z")["version"] = "hacked"
    assert manifest.version_of("20260101T000000Z") == "1.0.0"


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", "\x00\x01", "", "\xff\xfe"])
def test_a_corrupt_manifest_fails_closed_and_is_never_written_over(env, caplog, content):
    """Unreadable is never "empty" (issue 16 item 7): entries() raises naming the file; recording over it would
    lose every entry, so it raises too and the file stays as it is; version_of() (the master only names the
    version with it) is None, logged as an error."""
    from dewy.statefiles import StateFileError

    path = env.work / ".dewy" / "releases.json"
    (env.work / ".dewy").mkdir(mode=0o700)
    path.write_bytes(content.encode("latin-1"))
    manifest = Manifest(str(env.work))
    with pytest.raises(StateFileError, match="cannot read the release manifest %s: " % re.escape(str(path))):
        manifest.entries()
    with pytest.raises(StateFileError):
        manifest.record("20260101T000000Z", "1.0.0", "v1.0.0", "a", None)
    assert path.read_bytes() == content.encode("latin-1")
    with caplog.at_level(logging.ERROR, logger="dewy.releases"):
        assert manifest.version_of("20260101T000000Z") is None
    assert any("releases.json" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_manifest_skips_malformed_entries(env):
    (env.work / ".dewy").mkdir(mode=0o700)
    (env.work / ".dewy" / "releases.json").write_text(json.dumps({"a": "oops", "b": {"version": "1.0.0"}}))
    assert Manifest(str(env.work)).entries() == {"b": {"version": "1.0.0"}}
