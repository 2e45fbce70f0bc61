"""The fault matrix, disk full (issue 10): the disk fills up while a release downloads and while it unpacks.

A real dewy-master serves 1.0.0; then the file system under the cache (download) or under releases/
(unpack) is filled up, 1.1.0 is published, and each row checks the outcome: the deploy fails as
transient (audited once as `failed`, never refused), partial files are gone (no `.tmp.*` in the cache,
no `*.tmp` in releases/), the releases there before are intact and 1.0.0 keeps answering; once space
frees up (the filler is deleted) the next poll deploys 1.1.0 with the sha256 that was published, so
nothing bad stayed in the cache. A last row shows the decompression bomb limit holds on a disk barely
bigger than it: refused at max-release-size, never reaching "disk full".

The small file system is a tmpfs mounted inside the test's tmp dir (we run as root); when mounting is
not allowed, the poller's RLIMIT_FSIZE (set with prlimit(2) from outside) stands in for the full disk
(writes past it fail with EFBIG instead of ENOSPC); when neither works the tests skip, saying why.
DEWY_TEST_DISK=rlimit forces the fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
from pathlib import Path

import pytest

from archives import make_tar, tar_file
from helpers import Load, audit_entries, sample_app_source, wait_until

GOOD, NEW = "1.0.0", "1.1.0"
MIB = 1 << 20
FULL_ERRORS = ("No space left on device", "File too large")  # ENOSPC (tmpfs), EFBIG (RLIMIT_FSIZE)


class SmallDisk:
    """A file system that can be made full and freed again: a tmpfs, or the poller's RLIMIT_FSIZE."""

    def __init__(self, kind: str):
        self.kind = kind
        self.mounts: list = []
        self.fillers: list = []
        self.limited: list = []

    def mount(self, path: Path, size: int) -> Path:
        """A tmpfs of size bytes at path (created); with the rlimit fallback just the directory."""
        path.mkdir(parents=True, exist_ok=True)
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % size, "tmpfs", str(path)],
                           check=True, capture_output=True)
            self.mounts.append(path)
        return path

    def fill(self, path: Path, poller_pid: int, leave: int) -> None:
        """Leave only `leave` bytes: a filler file on the tmpfs at path, or the poller's file size limit."""
        if self.kind == "tmpfs":
            st = os.statvfs(path)
            filler = path / "filler"
            with open(filler, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - leave)
            self.fillers.append(filler)
        else:
            resource.prlimit(poller_pid, resource.RLIMIT_FSIZE, (leave, resource.RLIM_INFINITY))
            self.limited.append(poller_pid)

    def free(self) -> None:
        """Space frees up: the fillers go, the file size limits are lifted."""
        for filler in self.fillers:
            filler.unlink()
        self.fillers.clear()
        for pid in self.limited:
            try:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            except ProcessLookupError:
                pass  # that poller is gone (teardown after a stop)
        self.limited.clear()

    def close(self) -> None:
        """Unmount every tmpfs (lazily if something still holds it open)."""
        for path in reversed(self.mounts):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _disk_kind(tmp_path: Path) -> str:
    """tmpfs when this process may mount one, else rlimit when prlimit(2) works, else a skip."""
    if os.environ.get("DEWY_TEST_DISK") != "rlimit":
        probe = tmp_path / "mount-probe"
        probe.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
        if done.returncode == 0:
            subprocess.run(["umount", str(probe)], check=True)
            probe.rmdir()
            return "tmpfs"
        why = done.stderr.decode(errors="replace").strip()
    else:
        why = "DEWY_TEST_DISK=rlimit"
    try:
        resource.prlimit(os.getpid(), resource.RLIMIT_FSIZE)
    except (OSError, AttributeError) as exc:
        pytest.skip("cannot make a full disk: mounting a tmpfs failed (%s) and prlimit(2) does not work (%s)"
                    % (why, exc))
    return "rlimit"


@pytest.fixture
def small_disk(tmp_path):
    """A SmallDisk; request it before make_master, so its teardown (unmount) runs after the masters stop."""
    disk = SmallDisk(_disk_kind(tmp_path))
    try:
        yield disk
    finally:
        disk.free()
        disk.close()


# --------------------------------------------------------------------------- helpers
def publish_large(registry, tmp: Path, version: str, size: int, compressible: bool) -> str:
    """Publish the sample app plus `size` bytes, random (a large download) or zeros (a small download that
    unpacks large); the artifact's sha256."""
    path = make_tar(tmp / ("large-%s.tar.gz" % version), [
        tar_file("app.py", sample_app_source(), 0o755), tar_file("VERSION", (version + "\n").encode()),
        tar_file("payload.bin", bytes(size) if compressible else os.urandom(size))])
    data = Path(path).read_bytes()
    registry.publish_bytes(version, data)
    return hashlib.sha256(data).hexdigest()


def tree(root: Path) -> dict:
    """relative path -> sha256 (files) or link target, for everything under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cache_leftovers(cache: Path) -> list:
    """Temp files of writes that did not finish."""
    return [str(p) for p in cache.rglob(".tmp.*")]


def assert_failed_transiently(master, before: dict, cache: Path) -> dict:
    """1.1.0 failed for lack of space: audited once as failed, not refused, nothing partial left, 1.0.0 serves."""
    workdir = master.workdir
    entry = wait_until(lambda: next((e for e in audit_entries(workdir) if e.get("version") == NEW), None), 30,
                       "the failed deploy of %s in the audit log" % NEW, master.details)
    assert entry["result"] == "failed" and any(e in entry["error"] for e in FULL_ERRORS), entry
    polls = master.status()["polls"]
    master.wait_for(lambda s: s.get("polls", 0) >= polls + 5, 30, "five more polls (retries)")
    assert [e["result"] for e in audit_entries(workdir) if e.get("version") == NEW] == ["failed"]
    refused = workdir / ".dewy" / "refused.json"
    assert not refused.exists() or NEW not in json.loads(refused.read_text()).get("versions", {})
    st = master.status()
    assert st["version"] == GOOD and st["app_pids"] == before["app_pids"], st
    assert any(e in (st.get("last_error") or "") for e in FULL_ERRORS), st
    assert os.readlink(workdir / "current") == before["current"]
    # The poller retries at every poll, each attempt with its own fresh temp names for a few ms: wait for a
    # moment between attempts. A leftover would stay (nothing removes it for an hour) and time this out.
    releases = workdir / "releases"
    wait_until(lambda: not list(releases.glob("*.tmp")) and not cache_leftovers(cache), 10,
               "a moment without partial files", lambda: "releases: %s, cache: %s" % (
                   os.listdir(releases), cache_leftovers(cache)))
    assert before["releases"] == sorted(p for p in os.listdir(releases) if p not in ("filler",) and
                                        not p.endswith(".tmp"))
    assert tree(workdir / "current") == before["tree"], "the serving release changed"
    assert master.get() == (200, GOOD + "\n")
    return entry


def assert_deployed_after_space_frees(master, small_disk, sha256: str, cache: Path) -> None:
    """Space frees up: the next poll deploys 1.1.0, from bytes with the published sha256."""
    small_disk.free()
    master.wait_version(NEW)
    # The poller audits a deploy last (after the master switched): wait for its line.
    def audited():
        entries = [e for e in audit_entries(master.workdir) if e.get("version") == NEW]
        return entries if len(entries) > 1 else None
    entries = wait_until(audited, 10, "the audit line of the deploy of %s" % NEW,
                         lambda: str(audit_entries(master.workdir)))
    assert [e["result"] for e in entries] == ["failed", "deployed"], entries
    assert entries[-1]["sha256"] == sha256, entries
    cached = cache / "1.1.0%2Fapp.tar.gz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha256
    assert not cache_leftovers(cache)
    manifest = json.loads((master.workdir / ".dewy" / "releases.json").read_text())
    assert sha256 in json.dumps(manifest), manifest


def snapshot(master) -> dict:
    """What must not change while 1.1.0 fails."""
    workdir = master.workdir
    return {"current": os.readlink(workdir / "current"), "releases": sorted(os.listdir(workdir / "releases")),
            "tree": tree(workdir / "current"), "app_pids": master.status()["app_pids"]}


# --------------------------------------------------------------------------- the rows
@pytest.mark.timeout(120)
def test_disk_full_while_downloading_is_retried(small_disk, make_master, registry, tmp_path):
    """The cache's file system fills up mid-download: retried, the partial download removed, then deployed."""
    cache = small_disk.mount(tmp_path / "cachefs", 16 * MIB) / "cache"
    registry.publish(GOOD)
    master = make_master(cache="file://%s" % cache).start(wait_version=GOOD)
    before = snapshot(master)
    with Load(master.port) as load:
        small_disk.fill(cache.parent, master.status()["poller_pid"], leave=512 * 1024)
        sha256 = publish_large(registry, tmp_path, NEW, 4 * MIB, compressible=False)
        entry = assert_failed_transiently(master, before, cache)
        assert "download of app.tar.gz failed" in entry["error"], entry
        assert not [p for p in os.listdir(cache) if p.startswith("1.1.0")], os.listdir(cache)
        assert_deployed_after_space_frees(master, small_disk, sha256, cache)
    assert load.failed == 0


@pytest.mark.timeout(120)
def test_disk_full_while_unpacking_is_retried(small_disk, make_master, registry, tmp_path):
    """releases/ fills up mid-unpack: retried, the partial release removed, the cached download kept, deployed."""
    master = make_master()
    small_disk.mount(master.workdir / "releases", 16 * MIB)
    cache = master.workdir / ".dewy" / "cache"
    registry.publish(GOOD)
    master.start(wait_version=GOOD)
    before = snapshot(master)
    with Load(master.port) as load:
        small_disk.fill(master.workdir / "releases", master.status()["poller_pid"], leave=512 * 1024)
        sha256 = publish_large(registry, tmp_path, NEW, 4 * MIB, compressible=True)
        entry = assert_failed_transiently(master, before, cache)
        assert "cannot unpack app.tar.gz" in entry["error"], entry
        assert_deployed_after_space_frees(master, small_disk, sha256, cache)
    assert load.failed == 0


@pytest.mark.timeout(120)
def test_bomb_on_a_disk_barely_bigger_than_the_limit_is_refused(small_disk, make_master, registry, tmp_path):
    """A 64 MiB gzip bomb under max-release-size = 8MiB on a 10 MiB releases/: refused at the limit, which
    proves the unpack never held more than that on disk (past 10 MiB it would be a transient disk-full)."""
    master = make_master(**{"max-release-size": "8MiB"})
    small_disk.mount(master.workdir / "releases", 10 * MIB)
    registry.publish(GOOD)
    master.start(wait_version=GOOD)
    if small_disk.kind == "rlimit":
        small_disk.fill(master.workdir / "releases", master.status()["poller_pid"], leave=9 * MIB)
    before = snapshot(master)
    path = make_tar(tmp_path / "bomb.tar.gz", [tar_file("app.py", sample_app_source(), 0o755),
                                               tar_file("VERSION", b"1.1.0\n"), tar_file("zeros", bytes(64 * MIB))])
    registry.publish_bytes(NEW, Path(path).read_bytes())
    entry = wait_until(lambda: next((e for e in audit_entries(master.workdir) if e.get("version") == NEW), None),
                       30, "the refusal of %s" % NEW, master.details)
    assert entry["result"] == "refused", entry
    assert "unpacks to more than 8 MiB (max-release-size)" in entry["error"], entry
    assert not list((master.workdir / "releases").glob("*.tmp"))
    assert sorted(os.listdir(master.workdir / "releases")) == before["releases"]
    assert master.get() == (200, GOOD + "\n")


@pytest.mark.timeout(120)
def test_a_control_command_on_a_full_disk_answers_the_error(small_disk, make_master, registry, tmp_path):
    """`dewy pause` while .dewy/ is full (issue 16 item 10): the master answers the write error (no traceback),
    the client prints it and exits 1 (refused or failed), not 3 (no master runs); once space frees up, it works."""
    import sys

    from helpers import clean_environment
    master = make_master(cache="file://%s" % (tmp_path / "cache"))
    small_disk.mount(master.workdir / ".dewy", 4 * MIB)
    registry.publish(GOOD)
    master.start(wait_version=GOOD)
    if small_disk.kind == "tmpfs":
        # Fill it to the last page by writing until ENOSPC (the master writes its status meanwhile: a single
        # fallocate of what statvfs said was free can race with it).
        filler = master.workdir / ".dewy" / "filler"
        small_disk.fillers.append(filler)
        with open(filler, "wb", buffering=0) as fh:
            for chunk in (MIB, 64 * 1024, 4096, 512):
                try:
                    while True:
                        fh.write(bytes(chunk))
                except OSError:
                    pass
    else:
        small_disk.fill(master.workdir / ".dewy", master.pid, leave=0)

    def pause():
        return subprocess.run([sys.executable, "-m", "dewy", "pause", "--workdir", str(master.workdir)],
                              capture_output=True, text=True, timeout=60, env=clean_environment())
    out = pause()
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "pause failed" in out.stderr and any(e in out.stderr for e in FULL_ERRORS), out.stderr
    assert "Traceback" not in master.log_text(), master.log_tail()
    assert master.get() == (200, GOOD + "\n")
    small_disk.free()
    out = pause()
    assert out.returncode == 0 and "paused since" in out.stdout, out.stdout + out.stderr
