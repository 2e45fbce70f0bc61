"""S3 and GCS registries end to end: a real dewy-master deploys the sample app from moto's S3 server
and from fake-gcs-server, and a 256 MiB artifact is downloaded without the downloader's memory growing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dewy.demo.app import build_release
from helpers import Master, norm, wait_until
from servers import AWS_TEST_ENV, FakeGCSServer, GCSStore, MotoServer, PatternStream, S3Store

BACKENDS = ("s3", "gs")
SHIPPED = re.compile(r"^shipped_to_[a-z0-9._-]+_server_at_\d{8}T\d{6}\.\d{9}Z\.txt$")


class BucketRegistry:
    """The registry tests/helpers.Master deploys from: publish() uploads the sample app into a bucket.

    Like a CI job, it uploads checksums.txt first and the artifact last, so the poller never sees a
    version without its checksum.
    """

    ARTIFACT = "app.tar.gz"

    def __init__(self, store, staging: Path):
        self.store = store
        self.staging = staging
        staging.mkdir(parents=True, exist_ok=True)
        if store.scheme == "s3":
            store.endpoint_in_url = False  # the master's environment names it: AWS_ENDPOINT_URL

    @property
    def url(self) -> str:
        """The registry URL for the ini."""
        return self.store.url("artifact=" + self.ARTIFACT)

    def publish(self, version: str, behaviour: str = "", sha256: str | None = None) -> None:
        """Upload the sample app as `v<version>/app.tar.gz` with its checksums.txt (or the sha256 given)."""
        path = self.staging / ("v%s.tar.gz" % norm(version))
        build_release(str(path), norm(version), behaviour)
        data = path.read_bytes()
        tag = "v" + norm(version)
        self.store.put(tag + "/checksums.txt",
                       ("%s  %s\n" % (sha256 or hashlib.sha256(data).hexdigest(), self.ARTIFACT)).encode())
        self.store.put(tag + "/" + self.ARTIFACT, data)

    def shipped(self, version: str) -> list:
        """The shipped_to records in a version's directory."""
        prefix = "v%s/" % norm(version)
        return [name[len(prefix):] for name in self.store.names()
                if name.startswith(prefix + "shipped_to_")]


def make_store(backend: str, server, hint: str):
    return (S3Store if backend == "s3" else GCSStore)(server, hint=hint)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def start_master(request, tmp_path):
    """start_master(registry, env, **settings) -> a started Master; every one is stopped at teardown."""
    masters = []
    request.node.dewy_masters = masters  # conftest attaches their logs to a failed test's report

    def start(reg, env, wait_version=None, **settings) -> Master:
        master = Master(tmp_path, reg, env=env, **settings)
        masters.append(master)
        return master.start(wait_version=wait_version)

    yield start
    for master in masters:
        master.close()


def session_registry(request, backend: str, tmp_path: Path):
    """(BucketRegistry in a fresh bucket of the session's server, the environment a master needs)."""
    server = request.getfixturevalue("s3_server" if backend == "s3" else "gcs_server")
    return BucketRegistry(make_store(backend, server, "e2e-" + backend), tmp_path / "staging"), server.env


def test_newest_deployed_then_a_newer_one_with_shipped_to_records(request, backend, tmp_path, start_master):
    reg, env = session_registry(request, backend, tmp_path)
    for version in ("1.0.0", "1.1.0", "1.2.0-rc.1"):
        reg.publish(version)
    master = start_master(reg, env, wait_version="1.1.0")
    # The record comes after the switch: an empty object named as Dewy names it, in the version's directory.
    records = wait_until(lambda: reg.shipped("1.1.0"), 30, "the shipped_to record of 1.1.0", master.details)
    assert len(records) == 1 and SHIPPED.match(records[0]), records
    assert reg.store.get("v1.1.0/" + records[0]) == b""
    assert reg.shipped("1.0.0") == []

    reg.publish("1.2.0")
    master.wait_version("1.2.0")
    assert wait_until(lambda: reg.shipped("1.2.0"), 30, "the shipped_to record of 1.2.0", master.details)

    # A pre-release is not deployed without ?pre-release=true, however new.
    reg.publish("1.3.0-rc.1")
    polls = set()
    master.wait_for(lambda st: polls.add(st.get("last_poll")) or len(polls) >= 3, 30, "three more polls")
    status = master.status()
    assert (status["version"], status["latest_version"], status["last_error"]) == ("1.2.0", "1.2.0", None)
    code, body = master.get("/")
    assert (code, body.strip()) == (200, "1.2.0")
    assert reg.shipped("1.3.0-rc.1") == []


def test_a_checksum_mismatch_is_refused_while_the_old_version_serves(request, backend, tmp_path, start_master):
    reg, env = session_registry(request, backend, tmp_path)
    reg.publish("1.0.0")
    master = start_master(reg, env, wait_version="1.0.0")
    reg.publish("1.1.0", sha256="0" * 64)
    status = master.wait_for(lambda st: "checksum mismatch" in (st.get("last_error") or ""), 30,
                             "the poller to refuse 1.1.0")
    assert "1.1.0" in status["last_error"] and status["version"] == "1.0.0", status
    code, body = master.get("/")
    assert (code, body.strip()) == (200, "1.0.0")
    assert reg.shipped("1.1.0") == []


@pytest.fixture
def own_servers():
    """Servers a test may stop and restart (not the session's); all stopped at teardown."""
    started = []

    def start(backend: str, port: int | None = None):
        server = (MotoServer if backend == "s3" else FakeGCSServer)(port=port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_registry_outage_keeps_the_app_serving_and_is_logged_once(backend, tmp_path, start_master, own_servers):
    server = own_servers(backend)
    reg = BucketRegistry(make_store(backend, server, "outage"), tmp_path / "staging")
    reg.publish("1.0.0")
    master = start_master(reg, server.env, wait_version="1.0.0", poll_backoff_max="0.4s")
    server.stop()

    wait_until(lambda: re.search(r"failed polls: [4-9]", master.log_text()), 30,
               "four failed polls", master.details)
    status = master.status()
    assert "cannot connect to" in (status.get("last_error") or ""), status
    assert status["version"] == "1.0.0"
    code, body = master.get("/")
    assert (code, body.strip()) == (200, "1.0.0")
    assert master.log_text().count("polling backs off") == 1, master.log_tail()

    # The server comes back (empty, on the same port): the next release is deployed, the end logged once.
    server = own_servers(backend, port=server.port)
    reg.store.server = server
    reg.store.create_bucket()
    reg.publish("1.1.0")
    master.wait_version("1.1.0")
    assert master.log_text().count("answers again") == 1, master.log_tail()


MEMORY_ARTIFACT = 256 << 20  # bytes
MEMORY_GROWTH_LIMIT = 64 << 20

# Runs in a fresh process: fetch the artifact into a file the way the poller does (its store, chunk
# by chunk, hashing as it writes) and report the peak RSS growth. The client is made first: the SDK
# is not the download. Writing 5 to clear_refs resets VmHWM (the peak) to the current RSS.
FETCH_AND_MEASURE = r"""
import hashlib, json, sys
from dewy import artifact

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))

store = artifact.from_url(sys.argv[1])
store.client()
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass  # then VmHWM may include an earlier peak: the measured growth can only be larger
before = status("VmRSS")

class Hashing:
    def __init__(self, out):
        self.out, self.digest, self.size = out, hashlib.sha256(), 0
    def write(self, chunk):
        self.digest.update(chunk)
        self.size += len(chunk)
        return self.out.write(chunk)

with open(sys.argv[2], "wb") as out:
    sink = Hashing(out)
    store.fetch(sink)
print(json.dumps({"before": before, "peak": status("VmHWM"), "size": sink.size, "sha256": sink.digest.hexdigest()}))
"""


def test_a_256_mib_artifact_streams_to_disk_without_growing_memory(request, backend, tmp_path):
    server = request.getfixturevalue("s3_server" if backend == "s3" else "gcs_server")
    store = make_store(backend, server, "memory")
    stream = PatternStream(MEMORY_ARTIFACT)
    store.put_stream("v1.0.0/big.tar.gz", stream, MEMORY_ARTIFACT)
    try:
        env = dict(server.env, **AWS_TEST_ENV) if backend == "s3" else dict(server.env)
        out = subprocess.run([sys.executable, "-c", FETCH_AND_MEASURE, store.artifact_url("v1.0.0/big.tar.gz"),
                              str(tmp_path / "big.tar.gz")],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ, **env))
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        store.delete("v1.0.0/big.tar.gz")  # the session's server holds objects in memory
    assert result["size"] == MEMORY_ARTIFACT == (tmp_path / "big.tar.gz").stat().st_size
    assert result["sha256"] == stream.sha256()
    growth = result["peak"] - result["before"]
    print("%s: peak RSS growth %.1f MiB for a %d MiB artifact" % (backend, growth / 2**20, MEMORY_ARTIFACT >> 20))
    assert growth < MEMORY_GROWTH_LIMIT, "peak RSS grew by %.1f MiB fetching 256 MiB" % (growth / 2**20)
