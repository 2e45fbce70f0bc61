#!/usr/bin/env python3
"""Figure 6: a 1 GiB artifact from `file://`, moto's S3 server and fake-gcs-server — the poller's peak RSS
growth and its download throughput beside the plain tool for the same object, in the same run.

For each source a real dewy-master deploys the sample app (v1.0.0, small), then the benchmark publishes
v2.0.0: an uncompressed `app.tar` of --size bytes (the sample app plus one big file of incompressible
looking bytes, so the bytes on the wire are the size), with its checksums.txt, and waits until v2.0.0
serves. Meanwhile it samples the poller's /proc/<pid>/status every 50 ms; its VmHWM is reset (writing 5
to /proc/<pid>/clear_refs) once the poller is idle before the publication, so

  RSS growth (download)  = the highest VmRSS sampled between the poller's `deploying` and `downloaded`
                           lines - VmRSS before the publication;
  RSS growth (deploy)    = VmHWM after the deploy (download, verify, unpack) - VmRSS before.

Throughput = size / (the poller's `deploying` -> `downloaded` log lines, ms timestamps): cache look-up,
the store's client, the transfer, SHA-256 and the write into the download cache.

The peers fetch the same object into a file on the same disk, once right before and once right after
dewy's deploy (the mean is compared; `sync` before every run): `cp` (file://), boto3's
`download_file` (S3; its defaults: up to 10 threads of 8 MiB ranged GETs) and google-cloud-storage's
`Blob.download_to_filename` (GCS; its default MD5 check). Their SDK is imported before the clock starts,
as it is in a poller that already polled; making the client is timed, as dewy's lazy client is.

Targets: poller RSS growth < 64 MiB; dewy throughput >= 0.9 x the peer's.

The servers are started as the tests start them (tests/servers.py), the master as the integration
tests do (tests/helpers.Master). Everything lives in a scratch directory on the real disk (not a tmpfs
/tmp), removed at the end.

Usage:
  python3 bench/downloads.py [--size 1GiB] [--quick] [--sources file,s3,gs] [--json PATH] [--dir D] [--profile] [--keep]

Exit codes: 0 every deploy completed; 1 a deploy or a peer failed; 2 bad arguments; 130 interrupted.
(A missed target is reported in the table and the notes, not as a failing exit code.)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "bench")]

from dewy import audit  # noqa: E402
from dewy.demo.app import build_release  # noqa: E402
from dewy.demo.demo import poll_until  # noqa: E402
from deploy_latency import checkout_env, log_records, milestones, start_bucket  # noqa: E402
from harness import (code_under_test, ignore_interrupts, interrupt_on_term, machine, markdown_table,  # noqa: E402
                     print_header)

FIGURE = 6
TITLE = "Downloads: poller peak RSS growth and throughput beside the plain tool, same object, same run"
SOURCES = ("file", "s3", "gs")
NAMES = {"file": "file://", "s3": "S3 (moto server)", "gs": "GCS (fake-gcs-server)"}
PEERS = {"file": "cp", "s3": "boto3 download_file", "gs": "google-cloud-storage download_to_filename"}
ARTIFACT = "app.tar"
PEER_VERSION = "2.0.0-rc.1"  # a pre-release: never deployed (no ?pre-release=true), fetched by the peers
MiB = 1 << 20
RSS_TARGET = 64 * MiB
RATIO_TARGET = 0.9
SAMPLE_EVERY = 0.05
SETTINGS = {
    "interval": "1s",
    "ready": "delay:0.5s",
    "log-level": "info",
    "log-format": "json",
    "graceful-timeout": "10s",
    "keep-releases": "2",
}
COLUMNS = ["source", "size MiB", "dewy MiB/s", "peer", "peer MiB/s", "dewy / peer (>= 0.90)", "dewy CPU s/GiB",
           "peer CPU s/GiB", "poller RSS growth, download MiB", "poller RSS growth, whole deploy MiB (< 64)",
           "peer RSS growth MiB"]

# The peers, each in a process of its own (so its memory is its own): prints one JSON line.
PEER_SCRIPT = r"""
import json, sys, time
kind, dest = sys.argv[1], sys.argv[2]
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
if kind == "s3":
    import boto3
    from botocore.config import Config
    endpoint, bucket, key = sys.argv[3:6]
    before = status("VmRSS")
    t0, cpu0 = time.monotonic(), time.process_time()
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                             config=Config(s3={"addressing_style": "path"}))
    client.download_file(bucket, key, dest)
else:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    bucket, name = sys.argv[3:5]
    before = status("VmRSS")
    t0, cpu0 = time.monotonic(), time.process_time()
    client = storage.Client(project="bench", credentials=AnonymousCredentials())  # STORAGE_EMULATOR_HOST
    client.bucket(bucket).blob(name).download_to_filename(dest)
seconds = time.monotonic() - t0
print(json.dumps({"seconds": seconds, "cpu": time.process_time() - cpu0, "rss_before": before, "hwm": status("VmHWM")}))
"""


# --------------------------------------------------------------------------- the artifact
def parse_size(text: str) -> int:
    """`1GiB`, `128MiB`, `512M`, `2G` or a plain number of MiB, as bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(k|m|g)?(i?b)?\s*", text, re.I)
    if not m:
        raise ValueError("bad size %r; expected e.g. 1GiB, 128MiB or a number of MiB" % text)
    unit = (m.group(2) or "m").lower()
    return int(float(m.group(1)) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit])


def build_big_release(path: Path, version: str, size: int, staging: Path) -> str:
    """An uncompressed tar of `size` bytes: the sample app (app.py, VERSION) plus `blob.bin` filling the rest
    with tests/servers.PatternStream's bytes; returns its SHA-256 (read back from disk)."""
    from servers import PatternStream

    small = staging / ("small-%s.tar.gz" % version)
    build_release(str(small), version)
    members = []
    with tarfile.open(small) as src:
        for info in src.getmembers():
            members.append((info, src.extractfile(info).read()))
    # Each member takes a 512-byte header plus its data rounded up to 512; the archive ends with two
    # zero blocks and is padded to tarfile's 10 KiB record. Fit blob.bin so the total is about `size`.
    used = sum(512 + -(-len(data) // 512) * 512 for _, data in members) + 512 + 1024
    blob = max(0, size - used)
    blob -= blob % 10240
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, copybufsize=MiB) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("blob.bin")
        info.size, info.mode, info.mtime = blob, 0o644, time.time()
        tar.addfile(info, PatternStream(blob))
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 * MiB), b""):
            sha.update(chunk)
    return sha.hexdigest()


def build_small_release(path: Path, version: str, staging: Path) -> None:
    """The sample app as an uncompressed tar named like the big one (so one ?artifact= names both)."""
    small = staging / ("small-%s.tar.gz" % version)
    build_release(str(small), version)
    with tarfile.open(small) as src, tarfile.open(path, "w") as dst:
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))


# --------------------------------------------------------------------------- sources
class FileSource:
    """A file:// registry directory: `v<version>/app.tar` + checksums.txt, the version dir renamed in."""

    name = "file"
    env: dict = {}

    def __init__(self, base: Path):
        self.root = base / "registry"
        self.root.mkdir(parents=True)
        self.staging = base / "publish"
        self.staging.mkdir()

    @property
    def url(self) -> str:
        return "file://%s?artifact=%s" % (self.root, ARTIFACT)

    def publish(self, version: str, tar_path: Path, sha256: str, size: int, copy_of: str | None = None) -> None:
        """Publish tar_path as version (a hard link: the same bytes, no second GiB on the disk)."""
        tmp = Path(tempfile.mkdtemp(prefix="v", dir=self.staging))
        os.link(tar_path, tmp / ARTIFACT)
        (tmp / "checksums.txt").write_text("%s  %s\n" % (sha256, ARTIFACT))
        os.rename(tmp, self.root / ("v" + version))

    def peer(self, version: str, dest: Path) -> dict:
        """`cp` the artifact; seconds and CPU from the bench's side (no memory figure)."""
        import resource

        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        subprocess.run(["cp", str(self.root / ("v" + version) / ARTIFACT), str(dest)], check=True)
        seconds = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # What dewy does besides copying: check the copy's SHA-256 (`cp` then `sha256sum`, the verified peer).
        subprocess.run(["sha256sum", str(dest)], check=True, stdout=subprocess.DEVNULL)
        verified = time.monotonic() - t0
        cpu2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"seconds": seconds, "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                "verified_seconds": verified,
                "verified_cpu": (cpu2.ru_utime + cpu2.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)}

    def server_cpu(self) -> float | None:
        """No server behind a file:// registry."""
        return None

    def close(self) -> None:
        pass


class BucketSource:
    """A fresh bucket on moto's S3 server or fake-gcs-server (tests/servers.py)."""

    def __init__(self, base: Path, scheme: str):
        self.name = scheme
        self.server, self.store = start_bucket(scheme, "bench-dl")
        self.env = dict(self.server.env)

    @property
    def url(self) -> str:
        return self.store.url("artifact=" + ARTIFACT)

    def publish(self, version: str, tar_path: Path, sha256: str, size: int, copy_of: str | None = None) -> None:
        """Upload tar_path as version's artifact, or (GCS) copy version copy_of's server-side (no second upload).

        S3 always uploads: moto's CopyObject of a multipart object keeps a checksum the copy's bytes fail
        (botocore's response checksum validation then refuses the download)."""
        tag = "v" + version
        self.store.put(tag + "/checksums.txt", ("%s  %s\n" % (sha256, ARTIFACT)).encode())
        key = self.store.key(tag + "/" + ARTIFACT)
        if copy_of is None or self.name == "s3":
            with open(tar_path, "rb") as fh:
                self.store.put_stream(tag + "/" + ARTIFACT, fh, size)
        else:
            bucket = self.store.client.bucket(self.store.bucket)
            bucket.copy_blob(bucket.blob(self.store.key("v%s/%s" % (copy_of, ARTIFACT))), bucket, key, timeout=600)

    def peer(self, version: str, dest: Path) -> dict:
        key = self.store.key("v%s/%s" % (version, ARTIFACT))
        argv = [sys.executable, "-c", PEER_SCRIPT, self.name, str(dest)]
        argv += [self.server.endpoint, self.store.bucket, key] if self.name == "s3" else [self.store.bucket, key]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=dict(os.environ, **self.env))
        if out.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s" % (PEERS[self.name], out.returncode, out.stderr[-2000:]))
        return json.loads(out.stdout.strip().splitlines()[-1])

    def server_cpu(self) -> float | None:
        """CPU seconds the store's server process has used so far."""
        return cpu_seconds(self.server.proc.pid)

    def close(self) -> None:
        self.server.stop()


# --------------------------------------------------------------------------- the poller's memory
def proc_status(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/<pid>/status in bytes (None when the process is gone)."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) all threads of the process used so far, or None when it is gone."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


class Sampler(threading.Thread):
    """VmRSS and CPU time of one process every SAMPLE_EVERY seconds: [(epoch seconds, bytes, cpu seconds)]."""

    def __init__(self, pid: int):
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.samples = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss, cpu = proc_status(self.pid, "VmRSS"), cpu_seconds(self.pid)
            if rss is not None and cpu is not None:
                self.samples.append((time.time(), rss, cpu))
            self._halt.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- one source
def run_source(name: str, base: Path, big: Path, sha256: str, size: int, args) -> dict:
    """Deploy the big artifact args.rounds times from one source with a dewy-master, the peer before the first
    and after each; the figures."""
    from helpers import Master

    base.mkdir(parents=True)
    staging = base / "staging"
    staging.mkdir()
    result = {"source": name, "error": None, "size": size, "peer_runs": [], "rounds": []}
    print("[%s] starting the source" % name, flush=True)
    src = FileSource(base) if name == "file" else BucketSource(base, name)
    master = None
    try:
        small = staging / ARTIFACT
        build_small_release(small, "1.0.0", staging)
        src.publish("1.0.0", small, sha256_file(small), small.stat().st_size)
        t0 = time.monotonic()
        src.publish(PEER_VERSION, big, sha256, size)  # the peers' object: the same bytes, never deployed
        print("[%s] uploaded %d MiB in %.1fs" % (name, size // MiB, time.monotonic() - t0), flush=True)
        master = Master(base, src, env=dict(src.env, **checkout_env()), **SETTINGS)
        master.start(wait_version="1.0.0", timeout=120)
        wait_audited(master, "1.0.0", 60)
        poller = master.status()["poller_pid"]
        peer_dest = base / "peer-copy"
        peer_once(name, src, peer_dest, result)
        for i in range(args.rounds):
            result["rounds"].append(deploy_once(name, master, src, poller, "2.0.%d" % i, big, sha256, size))
            peer_once(name, src, peer_dest, result)
        if args.profile:
            result["profile"] = profile_poller(master, src, big, sha256, size, base, "2.0.%d" % args.rounds)
    except Exception as exc:  # noqa: BLE001 — report what broke, measure the other sources
        result["error"] = "%s: %s" % (type(exc).__name__, exc)
        print("[%s] FAILED: %s" % (name, result["error"]), flush=True)
        if master is not None:
            print(master.log_tail(30), flush=True)
    finally:
        if master is not None:
            master.close()
        src.close()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)  # a GiB or more per source: gone before the next one
    return result


def peer_once(name: str, src, dest: Path, result: dict) -> None:
    """One peer download, recorded and printed."""
    run = run_peer(src, dest)
    result["peer_runs"].append(run)
    print("[%s] %s: %.0f MiB/s, %.2f CPU s" % (name, PEERS[name], result["size"] / MiB / run["seconds"],
                                               run.get("cpu", float("nan"))), flush=True)


def deploy_once(name: str, master, src, poller: int, version: str, big: Path, sha256: str, size: int) -> dict:
    """Publish version (the big artifact; a server-side copy after the first) and measure the poller deploying it."""
    # The poller is idle (the last version deployed and audited): its RSS now is the baseline.
    time.sleep(1.5)  # past a poll, so the registry client's buffers are as after any poll
    os.sync()
    hwm_reset = reset_peak(poller)
    before = proc_status(poller, "VmRSS")
    sampler = Sampler(poller)
    sampler.start()
    try:
        src.publish(version, big, sha256, size, copy_of=None if version.endswith(".0") else "2.0.0")
        t_pub = time.time()
        server0 = src.server_cpu()  # from the publication on: the store serves the listing and the download
        timeout = max(300.0, size / (5 * MiB))
        wait_audited(master, version, timeout)
        server_cpu = None if server0 is None else src.server_cpu() - server0
    finally:
        sampler.stop()
    hwm = proc_status(poller, "VmHWM")
    status = master.status()
    if status.get("poller_pid") != poller:
        raise RuntimeError("the poller was restarted during the deploy (pid %s -> %s)"
                           % (poller, status.get("poller_pid")))
    if status.get("version") != version:
        raise RuntimeError("%s was audited as deployed but %s serves" % (version, status.get("version")))
    marks = milestones(log_records(master.log_path), version)
    if "seen" not in marks or "downloaded" not in marks:
        raise RuntimeError("the poller's `deploying`/`downloaded` lines for %s are missing\n%s"
                           % (version, master.log_tail(30)))
    during = [x for x in sampler.samples if marks["seen"] - SAMPLE_EVERY <= x[0] <= marks["downloaded"] + SAMPLE_EVERY]
    # CPU over the download: the samples just outside the span bound it (at most 2 x 50 ms too much).
    cpu = (during[-1][2] - during[0][2]) if len(during) >= 2 else None
    r = dict(version=version, before=before, hwm=hwm, publish_to_seen=marks["seen"] - t_pub,
             download_seconds=marks["downloaded"] - marks["seen"], cpu=cpu,
             growth_download=(max(x[1] for x in during) - before) if during else None,
             growth_deploy=hwm - before if hwm_reset else max(x[1] for x in sampler.samples) - before,
             hwm_reset=hwm_reset, samples=len(sampler.samples), logged=downloaded_line(master, version),
             server_cpu=server_cpu)
    print("[%s] dewy %s: %.0f MiB/s, %s CPU s, poller RSS +%.1f MiB (download), +%.1f MiB (whole deploy)" % (
        name, version, size / MiB / r["download_seconds"], "-" if cpu is None else "%.2f" % cpu,
        (r["growth_download"] or 0) / MiB, r["growth_deploy"] / MiB), flush=True)
    return r


def run_peer(src, dest: Path) -> dict:
    """One peer download into dest (removed afterwards), after a sync."""
    os.sync()
    cpu0 = src.server_cpu()
    try:
        run = src.peer(PEER_VERSION, dest)
        if cpu0 is not None:
            run["server_cpu"] = src.server_cpu() - cpu0
        return run
    finally:
        try:
            dest.unlink()
        except FileNotFoundError:
            pass


def wait_audited(master, version: str, timeout: float) -> None:
    """Wait for the `deployed` audit entry of version (the poller is done with that deploy)."""
    if not poll_until(lambda: any(e.get("version") == version and e.get("result") == "deployed"
                                  for e in audit.read(str(master.workdir))), timeout, 0.05):
        raise RuntimeError("no `deployed` audit entry for %s within %.0fs\n%s" % (version, timeout, master.details()))


def downloaded_line(master, version: str) -> str:
    """The poller's own `downloaded ...` message for version (its byte count and seconds)."""
    for rec in log_records(master.log_path):
        if rec.get("version") == version and rec["msg"].startswith("downloaded "):
            return rec["msg"]
    return ""


def profile_poller(master, src, big: Path, sha256: str, size: int, base: Path, version: str) -> str:
    """py-spy the poller (idle time included: waiting on the network counts) while it deploys the artifact once
    more as version; the top of its profile."""
    poller = master.status()["poller_pid"]
    out = base / "profile.txt"
    spy = shutil.which("py-spy")
    if not spy:
        return "py-spy not found (pip install py-spy)"
    proc = subprocess.Popen([spy, "record", "--pid", str(poller), "--format", "raw", "--rate", "50",
                             "--output", str(out), "--nonblocking", "--idle"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        src.publish(version, big, sha256, size, copy_of="2.0.0")
        wait_audited(master, version, timeout=max(300.0, size / (5 * MiB)))
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    if not out.exists():
        return "py-spy failed: %s" % err[-500:]
    return top_frames(out.read_text())


def top_frames(raw: str, n: int = 12) -> str:
    """Where the deploy pipeline (`Deploy.run`) spent its time — waits included — from py-spy's raw (collapsed)
    output: the innermost frames, by share of the pipeline's samples."""
    own = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "Deploy.run" not in stack:
            continue  # the poller idle between polls, the notifier's thread: not the deploy
        total += int(count)
        leaf = stack.split(";")[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:n]
    return "\n".join("%5.1f%%  %s" % (100.0 * c / max(total, 1), f) for f, c in top)


# --------------------------------------------------------------------------- report
def rows_of(r: dict) -> list:
    """The table rows of a source: against its plain tool, and for file:// also against `cp` + `sha256sum`
    (a copy checked as dewy checks it)."""
    rows = [row_of(r)]
    if r["source"] == "file" and not r["error"] and r["peer_runs"]:
        verified = [dict(p, seconds=p["verified_seconds"], cpu=p["verified_cpu"]) for p in r["peer_runs"]]
        rows.append(row_of(dict(r, peer_runs=verified), "cp + sha256sum"))
    return rows


def row_of(r: dict, peer_name: str | None = None) -> list:
    """One table row (COLUMNS) for a source's result: medians of the rounds and of the peer runs, the
    largest memory growth."""
    name = r["source"]
    rounds, peers = r["rounds"], r["peer_runs"]
    if r["error"] or not rounds or not peers:
        return [NAMES[name], "-", "-", PEERS[name]] + ["-"] * (len(COLUMNS) - 4)
    size = r["size"]
    dewy = size / MiB / median(x["download_seconds"] for x in rounds)
    peer = size / MiB / median(p["seconds"] for p in peers)
    ratio = dewy / peer
    per_gib = (1 << 30) / size
    dewy_cpu = [x["cpu"] for x in rounds if x["cpu"] is not None]
    peer_cpu = [p["cpu"] for p in peers if p.get("cpu") is not None]
    peer_growth = [p["hwm"] - p["rss_before"] for p in peers if "hwm" in p]
    growth_download = [x["growth_download"] for x in rounds if x["growth_download"] is not None]
    growth_deploy = max(x["growth_deploy"] for x in rounds)

    def mib(v):
        return "-" if v is None else "%.1f" % (v / MiB)
    return [NAMES[name], "%d" % (size // MiB), "%.0f" % dewy, peer_name or PEERS[name], "%.0f" % peer,
            "%.2f%s" % (ratio, "" if ratio >= RATIO_TARGET else " (missed)"),
            "%.2f" % (median(dewy_cpu) * per_gib) if dewy_cpu else "-",
            "%.2f" % (median(peer_cpu) * per_gib) if peer_cpu else "-",
            mib(max(growth_download)) if growth_download else "-",
            "%s%s" % (mib(growth_deploy), "" if growth_deploy < RSS_TARGET else " (missed)"),
            mib(max(peer_growth)) if peer_growth else "-"]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="artifact size: 1GiB (default), 256MiB, or a number of MiB")
    ap.add_argument("--quick", action="store_true", help="a 128 MiB artifact, 2 rounds (a smoke run)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="dewy deploys of the artifact per source, each followed by a peer run (default 3; the "
                         "peer also runs once before the first): medians are compared")
    ap.add_argument("--sources", default=",".join(SOURCES),
                    help="comma-separated subset of %s (default: all)" % ",".join(SOURCES))
    ap.add_argument("--dir", default=None,
                    help="where the scratch directory goes (default: the system temp dir unless it is a tmpfs, "
                         "then /var/tmp)")
    ap.add_argument("--profile", action="store_true",
                    help="afterwards, deploy the artifact once more under py-spy and print the poller's top frames")
    ap.add_argument("--json", metavar="PATH", help="write the figure as JSON (bench/run's contract)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the scratch directory (the masters' logs, and every copy of the artifact)")
    args = ap.parse_args(argv)
    try:
        args.size = parse_size("128MiB" if args.quick else args.size)
    except ValueError as exc:
        ap.error("--size: %s" % exc)
    if args.size < MiB:
        ap.error("--size must be at least 1 MiB")
    if args.quick:
        args.rounds = min(args.rounds, 2)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    args.sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    bad = [s for s in args.sources if s not in SOURCES]
    if bad or not args.sources:
        ap.error("--sources: unknown %s; expected a comma-separated subset of %s" % (
            ", ".join(bad) or "(none given)", ",".join(SOURCES)))
    return args


def scratch_parent(wanted: str | None) -> str:
    """A directory on a real disk for a GiB or more: --dir, else the temp dir unless it is a tmpfs."""
    if wanted:
        return wanted
    tmp = tempfile.gettempdir()
    try:
        with open("/proc/mounts") as fh:
            mounts = [line.split() for line in fh]
        best = max((m for m in mounts if os.path.realpath(tmp).startswith(m[1].rstrip("/") + "/") or m[1] == tmp),
                   key=lambda m: len(m[1]), default=None)
        if best and best[2] == "tmpfs":
            return "/var/tmp"
    except OSError:
        pass
    return tmp


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = shlex.join([sys.executable] + sys.argv)
    print_header()
    interrupt_on_term()

    parent = scratch_parent(args.dir)
    scratch = Path(tempfile.mkdtemp(prefix="dewy-bench-downloads-", dir=parent))
    print("scratch: %s; artifact %d MiB" % (scratch, args.size // MiB), flush=True)
    results = []
    interrupted = False
    try:
        big = scratch / "big.tar"
        t0 = time.monotonic()
        sha256 = build_big_release(big, "2.0.0", args.size, scratch)
        size = big.stat().st_size
        print("built %s: %d bytes in %.1fs, sha256 %s" % (big, size, time.monotonic() - t0, sha256), flush=True)
        for name in args.sources:
            results.append(run_source(name, scratch / name, big, sha256, size, args))
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", flush=True)
        interrupted = True
    finally:
        ignore_interrupts()  # a second Ctrl-C must not abandon the clean-up
        if args.keep:
            print("scratch directory kept (artifacts included: remove it yourself): %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if interrupted:
        return 130

    rows = [row for r in results for row in rows_of(r)]
    print()
    print(markdown_table(COLUMNS, rows))
    print()
    notes = [
        "dewy: a dewy-master deploys v2.0.0, v2.0.1, ... (%d round(s); each an uncompressed app.tar of %d MiB with "
        "checksums.txt; file:// a hard link, S3 an upload, GCS a server-side copy after the first); throughput from "
        "the poller's `deploying` -> `downloaded` log lines (making the store's client, the transfer, SHA-256, the "
        "write and fsync into the download cache); the poller's CPU (all threads) and RSS (/proc/<pid>/status) "
        "sampled every %d ms; VmHWM reset via clear_refs before each publication. Medians of the rounds; memory: "
        "the largest growth."
        % (args.rounds, args.size // MiB, SAMPLE_EVERY * 1000),
        "Peers fetch the same object into a file on the same disk, once before the first round and after each "
        "(median); `sync` before every run. boto3 download_file uses its default TransferConfig (up to 10 threads, "
        "8 MiB parts), download_to_filename its default MD5 check, cp whatever GNU cp does (copy_file_range on one "
        "file system: no copy through user space, no checksum).",
        "The store servers (moto, fake-gcs-server) and the other engineers' jobs share the same 2 cores: wall-clock "
        "throughput is noisy, CPU seconds per GiB much less so.",
        "moto serves each of download_file's 8 MiB ranged GETs at a cost that grows with the object (its CPU per "
        "run is below): the S3 peer's slowness here is moto's, not S3's; dewy makes one streamed GET.",
    ]
    bad = False
    for r in results:
        if r["error"]:
            bad = True
            notes.append("%s: FAILED: %s" % (NAMES[r["source"]], r["error"].splitlines()[0]))
            continue
        notes.append("%s: MiB/s of each run: dewy %s; %s %s" % (
            NAMES[r["source"]], ", ".join("%.0f" % (r["size"] / MiB / x["download_seconds"]) for x in r["rounds"]),
            PEERS[r["source"]], ", ".join("%.0f" % (r["size"] / MiB / p["seconds"]) for p in r["peer_runs"])))
        if r["source"] != "file":
            notes.append("%s: the server's own CPU seconds per run: dewy's deploys %s; %s %s" % (
                NAMES[r["source"]],
                ", ".join("%.1f" % x["server_cpu"] for x in r["rounds"] if x.get("server_cpu") is not None),
                PEERS[r["source"]], ", ".join("%.1f" % p["server_cpu"] for p in r["peer_runs"]
                                              if p.get("server_cpu") is not None)))
        if r.get("profile"):
            notes.append("%s: py-spy (--idle) of the poller over one more deploy, innermost frames of Deploy.run:\n%s"
                         % (NAMES[r["source"]], r["profile"]))
    for note in notes:
        print("note: %s" % note)
    if args.json:
        doc = {"figure": FIGURE, "title": TITLE, "command": command, "columns": COLUMNS, "rows": rows,
               "notes": notes, "peers_missing": [],
               "extra": {"machine": machine(), "code": code_under_test(), "size": args.size, "results": results,
                         "targets": {"rss_growth_bytes": RSS_TARGET, "throughput_ratio": RATIO_TARGET}}}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
