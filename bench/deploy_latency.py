#!/usr/bin/env python3
"""Figure 4: publish -> first request served by the new version, per registry, with `interval = 1s`.

For each registry — `file://`, S3 (moto's server), GCS (fake-gcs-server) and GitHub Releases (the
stand-in tests/ghstub.py) — one dewy-master runs the sample app under light HTTP load, and the
benchmark publishes N new versions one after the other, each at a random moment of the poll cycle
(so the poll wait is sampled as an operator meets it). For each deploy it measures publish ->
the first answer from the new version (seen by the load), and splits it into parts taken from the
timestamps (milliseconds, UTC) dewy already writes to its log (`log-format = json`):

  poll wait       publish -> the poller's `deploying <version>` line (waiting for the next poll, plus
                  the registry's answer to that poll)
  download        -> the poller's `downloaded ...` line (cache look-up, fetch, SHA-256, verify)
  unpack          -> the master's `deploying version <v> from <dir>` line (releases.install, the
                  manifest, the `deploy` message over the pipe)
  switch + spawn  -> the master's `started generation N [deploy]` line (`current` switched, fork+exec)
  app start       -> the first answer from the new version (the app's own start-up, as seen by the load)

There is no peer that pulls from a registry and deploys on its own (Server::Starter and gunicorn only
restart what is on disk), so the comparison is with the floor: the sample app's own start-up
(spawn -> first answer on an inherited, already-listening socket, no supervisor), measured before each
deploy under the same load.

The servers are started the way the tests start them (tests/servers.py, tests/ghstub.py) and the
master the way the integration tests do (tests/helpers.Master).

Usage:
  python3 bench/deploy_latency.py [--deploys N] [--quick] [--registries file,s3,gs,ghr]
                                  [--threads N] [--json PATH] [--keep]

Exit codes: 0 every deploy served and no request failed; 1 otherwise; 2 bad arguments; 130 interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "bench")]

from dewy import audit  # noqa: E402
from dewy.demo.app import build_release  # noqa: E402
from dewy.demo.demo import Load, poll_until  # noqa: E402
from handover import app_floor  # noqa: E402  (the sample app alone: exec -> first answer, as figure 3 measures it)
from harness import (Scratch, code_under_test, common_args, machine, markdown_table, percentile,  # noqa: E402
                     print_header)

FIGURE = 4
TITLE = "Publish -> first request served by the new version (interval = 1s), per registry"
REGISTRIES = ("file", "s3", "gs", "ghr")
NAMES = {"file": "file://", "s3": "S3 (moto server)", "gs": "GCS (fake-gcs-server)",
         "ghr": "GitHub Releases (tests/ghstub.py)"}
PARTS = [  # (key, label)
    ("total", "publish -> first answer (total)"),
    ("poll_wait", "  poll wait (publish -> poller `deploying`)"),
    ("download", "  download (-> `downloaded`)"),
    ("unpack", "  unpack + hand-over (-> master `deploying version`)"),
    ("spawn", "  switch + spawn (-> `started generation`)"),
    ("app_start", "  app start (-> first answer)"),
    ("dewy", "dewy's own time (total - poll wait)"),
]
DEPLOY_TIMEOUT = 60.0  # a deploy not served by then is an error, not a slow result
SETTINGS = {
    "interval": "1s",
    "ready": "delay:1s",
    "log-level": "info",
    "log-format": "json",
    "graceful-timeout": "10s",
    "keep-releases": "3",
}
GH_OWNER, GH_REPO, GH_TOKEN = "acme", "web", "ghp_bench_stub_token_4711"


# --------------------------------------------------------------------------- registries
class Published:
    """Common part of the registry adapters: the sample app's tarball for a version, built in staging."""

    ARTIFACT = "app.tar.gz"
    env: dict = {}

    def __init__(self, base: Path):
        self.staging = base / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    def tarball(self, version: str) -> bytes:
        path = self.staging / ("v%s.tar.gz" % version)
        build_release(str(path), version)
        return path.read_bytes()

    def publish(self, version: str, behaviour: str = "") -> float:
        """Publish version; returns the wall-clock time just before it could become visible."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server behind the registry."""


class FileRegistry(Published):
    """tests/helpers.Registry: `<root>/v<version>/app.tar.gz`, the version dir renamed into place."""

    def __init__(self, base: Path):
        super().__init__(base)
        from helpers import Registry
        self.reg = Registry(base)

    @property
    def url(self) -> str:
        return self.reg.url

    def publish(self, version: str, behaviour: str = "") -> float:
        data = self.tarball(version)
        t = time.time()
        self.reg.publish_bytes(version, data)  # written aside, renamed in: visible at once, whole
        return t


def start_bucket(scheme: str, hint: str) -> tuple:
    """(server, store): moto's S3 server or fake-gcs-server started as the tests start them, with a fresh bucket."""
    import servers
    server = (servers.MotoServer if scheme == "s3" else servers.FakeGCSServer)().start()
    try:
        return server, (servers.S3Store if scheme == "s3" else servers.GCSStore)(server, hint=hint)
    except BaseException:
        server.stop()
        raise


class BucketRegistry(Published):
    """A fresh bucket on moto's S3 server or fake-gcs-server (tests/servers.py); checksums.txt, then the artifact."""

    def __init__(self, base: Path, scheme: str):
        super().__init__(base)
        self.server, self.store = start_bucket(scheme, "bench-latency")
        self.env = dict(self.server.env)

    @property
    def url(self) -> str:
        return self.store.url("artifact=" + self.ARTIFACT)

    def publish(self, version: str, behaviour: str = "") -> float:
        data = self.tarball(version)
        tag = "v" + version
        digest = hashlib.sha256(data).hexdigest()
        self.store.put(tag + "/checksums.txt", ("%s  %s\n" % (digest, self.ARTIFACT)).encode())
        t = time.time()
        self.store.put(tag + "/" + self.ARTIFACT, data)  # the version is complete (deployable) from here on
        return t

    def close(self) -> None:
        self.server.stop()


class GitHubRegistry(Published):
    """The GitHub REST stand-in (tests/ghstub.py): a release with the tarball as its asset (GitHub's digest)."""

    def __init__(self, base: Path):
        super().__init__(base)
        from ghstub import GitHubStub
        self.stub = GitHubStub(tokens=(GH_TOKEN,))
        # GH_TOKEN wins over GITHUB_TOKEN: set both so a token of this machine's environment is not used.
        self.env = {"GITHUB_API_URL": self.stub.api_url, "GITHUB_ENDPOINT": "", "GH_TOKEN": GH_TOKEN,
                    "GITHUB_TOKEN": GH_TOKEN, "GITHUB_ARTIFACT": "", "GITHUB_APP_ID": "",
                    "GITHUB_APP_INSTALLATION_ID": ""}

    @property
    def url(self) -> str:
        return "ghr://%s/%s?artifact=%s" % (GH_OWNER, GH_REPO, self.ARTIFACT)

    def publish(self, version: str, behaviour: str = "") -> float:
        data = self.tarball(version)
        t = time.time()
        self.stub.publish(GH_OWNER, GH_REPO, "v" + version, assets={self.ARTIFACT: data})
        return t

    def close(self) -> None:
        self.stub.close()


def make_registry(name: str, base: Path) -> Published:
    """The adapter (and its server) for a registry name."""
    if name == "file":
        return FileRegistry(base)
    if name in ("s3", "gs"):
        return BucketRegistry(base, name)
    return GitHubRegistry(base)


def checkout_env() -> dict:
    """PYTHONPATH naming this checkout first, so dewy-master and the poller run the code under test
    whatever `pip install -e` last pointed the interpreter at."""
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": ROOT + (os.pathsep + rest if rest else "")}


# --------------------------------------------------------------------------- the master's log
def parse_time(text: str) -> float:
    """dewy's log time (2026-11-26T06:50:12.123Z) as epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def log_records(path: Path) -> list:
    """The JSON log records of the master and its poller (app output and other lines skipped)."""
    records = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
                rec["t"] = parse_time(rec["time"])
            except (ValueError, KeyError):
                continue
            records.append(rec)
    return records


def milestones(records: list, version: str) -> dict:
    """When the log says each step of version's deploy happened (epoch seconds; missing steps absent)."""
    found = {}

    def first(key, predicate):
        if key not in found:
            for rec in records:
                if predicate(rec):
                    found[key] = rec["t"]
                    return

    first("seen", lambda r: r["logger"].startswith("dewy.poller") and r["msg"].startswith("deploying %s (" % version))
    first("downloaded", lambda r: r.get("version") == version and r["msg"].startswith("downloaded "))
    first("handed", lambda r: r["msg"].startswith("deploying version %s from " % version))
    first("spawned", lambda r: r.get("version") == version and r["msg"].startswith("started generation")
          and "[deploy]" in r["msg"])
    return found


# --------------------------------------------------------------------------- one registry
def run_registry(name: str, base: Path, args, floor_app: str) -> dict:
    """Start the registry's server and a dewy-master, deploy args.deploys versions under load; the timings."""
    from helpers import Master

    base.mkdir(parents=True)
    print("[%s] starting the registry" % name, flush=True)
    reg = make_registry(name, base)
    master = None
    load = None
    result = {"registry": name, "deploys": [], "floor": [], "error": None, "failed": 0, "ok": 0, "reasons": []}
    try:
        reg.publish("1.0.0")
        master = Master(base, reg, env=dict(reg.env, **checkout_env()), **SETTINGS)
        print("[%s] starting dewy-master (registry %s)" % (name, reg.url), flush=True)
        master.start(wait_version="1.0.0", timeout=DEPLOY_TIMEOUT)
        result["ini"] = master.ini_text()
        load = Load(master.port, threads=args.threads, pause=args.pause).start()
        offset = time.time() - time.monotonic()  # load.first_seen is monotonic; dewy's log is wall-clock
        previous = "1.0.0"
        for i in range(1, args.deploys + 1):
            version = "1.%d.0" % i
            # The previous deploy is over (audited, old generation gone): the poller is back to polling.
            settle(master, previous)
            # The floor under the same conditions (this load, this master idle), once per deploy.
            result["floor"] += app_floor(floor_app, 1)
            time.sleep(random.uniform(0, args.interval))  # publish at a random phase of the poll cycle
            t_pub = reg.publish(version)
            if not load.wait_seen(version, DEPLOY_TIMEOUT):
                raise RuntimeError("version %s was not served within %.0fs of its publication\n%s"
                                   % (version, DEPLOY_TIMEOUT, master.details()))
            t_first = load.first_seen[version] + offset
            result["deploys"].append({"version": version, "published": t_pub, "first_answer": t_first})
            print("[%s] deploy %2d/%d: %s served %4.0f ms after its publication" % (
                name, i, args.deploys, version, (t_first - t_pub) * 1000), flush=True)
            previous = version
        settle(master, previous)
    except Exception as exc:  # noqa: BLE001 — report what broke, measure the other registries
        result["error"] = "%s: %s" % (type(exc).__name__, exc)
        print("[%s] FAILED: %s" % (name, result["error"]), flush=True)
    finally:
        if load is not None:
            load.stop()
            result.update(ok=load.ok, failed=load.failed, reasons=list(load.reasons[:10]))
        if master is not None:
            master.close()
            records = log_records(master.log_path)
            for d in result["deploys"]:
                d.update(milestones(records, d["version"]))
            if result["error"]:
                result["log_tail"] = master.log_tail(40)
        reg.close()
    return result


def settle(master, version: str) -> None:
    """Wait until version serves alone (nothing starting or retiring) and its deploy is in the audit log."""
    master.wait_for(lambda s: s.get("version") == version and s.get("state") == "running" and not s.get("deploying")
                    and not s.get("starting_pid") and not s.get("retiring_pids"), DEPLOY_TIMEOUT,
                    "version %s serving alone" % version)
    ok = poll_until(lambda: any(e.get("version") == version and e.get("result") == "deployed"
                                for e in audit.read(str(master.workdir))), DEPLOY_TIMEOUT, 0.02)
    if not ok:
        raise RuntimeError("no `deployed` audit entry for %s\n%s" % (version, master.details()))


def parts_of(d: dict) -> dict:
    """The parts (seconds) of one deploy, from its milestones; a part whose ends are missing is absent."""
    chain = [("poll_wait", "published", "seen"), ("download", "seen", "downloaded"), ("unpack", "downloaded", "handed"),
             ("spawn", "handed", "spawned"), ("app_start", "spawned", "first_answer")]
    out = {"total": d["first_answer"] - d["published"]}
    for key, a, b in chain:
        if a in d and b in d:
            out[key] = d[b] - d[a]
    if "seen" in d:
        out["dewy"] = d["first_answer"] - d["seen"]
    return out


# --------------------------------------------------------------------------- report
def ms(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else "%.0f" % (value * 1000)


def build_rows(results: list) -> list:
    """Table rows: [registry, part, n, p50 ms, p90 ms, max ms]."""
    rows = []
    for r in results:
        parts = [parts_of(d) for d in r["deploys"]]
        samples = [(label, [p[key] for p in parts if key in p]) for key, label in PARTS]
        samples.append(("floor: the sample app alone, spawn -> first answer", r["floor"]))
        for label, values in samples:
            rows.append([NAMES[r["registry"]], label, len(values), ms(percentile(values, 50)),
                         ms(percentile(values, 90)), ms(max(values) if values else None)])
        dewy = [p["dewy"] for p in parts if "dewy" in p]
        if dewy and r["floor"]:
            rows.append([NAMES[r["registry"]], "dewy's own time above the floor (p50 - floor p50)", len(dewy),
                         ms(percentile(dewy, 50) - percentile(r["floor"], 50)), "", ""])
    return rows


COLUMNS = ["registry", "part", "n", "p50 ms", "p90 ms", "max ms"]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploys", type=int, default=10, help="deploys per registry (default 10)")
    ap.add_argument("--registries", default=",".join(REGISTRIES),
                    help="comma-separated subset of %s (default: all)" % ",".join(REGISTRIES))
    ap.add_argument("--threads", type=int, default=2, help="load: client threads GET / (default 2)")
    ap.add_argument("--pause", type=float, default=0.005,
                    help="load: seconds each client waits between requests (default 0.005)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random publish phases")
    common_args(ap)  # --json PATH, --quick (3 deploys per registry), --keep (the scratch directory, with the logs)
    args = ap.parse_args(argv)
    args.interval = 1.0
    if args.quick:
        args.deploys = 3
    args.registries = [r.strip() for r in args.registries.split(",") if r.strip()]
    bad = [r for r in args.registries if r not in REGISTRIES]
    if bad or not args.registries:
        ap.error("--registries: unknown %s; expected a comma-separated subset of %s" % (
            ", ".join(bad) or "(none given)", ",".join(REGISTRIES)))
    if args.deploys < 1 or args.threads < 1 or args.pause < 0:
        ap.error("--deploys and --threads must be >= 1, --pause >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = shlex.join([sys.executable] + sys.argv)
    print_header()
    print("load: %d client thread(s) GET /, %.0f ms pause, new connection per request; %d deploy(s) per registry; "
          "interval = 1s, ready = delay:1s" % (args.threads, args.pause * 1000, args.deploys), flush=True)
    random.seed(args.seed)

    results = []
    try:
        with Scratch("dewy-bench-deploy-", args.keep) as scratch:
            floor_app = scratch.unpacked_app("floor")
            for name in args.registries:
                results.append(run_registry(name, Path(scratch.path) / name, args, floor_app))
    except KeyboardInterrupt:
        print("\ninterrupted: cleaned up", flush=True)
        return 130

    rows = build_rows(results)
    print()
    print(markdown_table(COLUMNS, rows))
    print()
    notes = [
        "No peer: Server::Starter and gunicorn restart what is on disk and pull from no registry. The floor is the "
        "sample app's own start-up (spawn -> first answer on an inherited listening socket, no supervisor), measured "
        "once before each deploy under the same load.",
        "Each version is published at a random phase of the poller's 1 s cycle (interval = 1s, +-10% jitter), so "
        "the poll wait is spread over 0..1.1 s by design; `dewy's own time` leaves it out.",
        "Parts come from the millisecond timestamps dewy writes (log-format = json): the poller's `deploying` and "
        "`downloaded` lines, the master's `deploying version` and `started generation` lines; the first answer "
        "from the load (%d thread(s), %.0f ms pause between requests)." % (args.threads, args.pause * 1000),
        "The new generation accepts on the shared socket as soon as it runs, before `ready = delay:1s` passes, "
        "so the first answer marks the app's start-up, not readiness.",
    ]
    bad = False
    for r in results:
        if r["error"]:
            bad = True
            notes.append("%s: run broke after %d deploy(s): %s" % (NAMES[r["registry"]], len(r["deploys"]),
                                                                   r["error"].splitlines()[0]))
            print("[%s] run broke: %s\n%s" % (r["registry"], r["error"], r.get("log_tail", "")))
        if r["failed"]:
            bad = True
            print("[%s] %d request(s) FAILED: %s" % (r["registry"], r["failed"], "; ".join(r["reasons"])))
        notes.append("%s: %d requests ok, %d failed during the run." % (NAMES[r["registry"]], r["ok"], r["failed"]))
        missing = [d["version"] for d in r["deploys"] if len(parts_of(d)) < len(PARTS)]
        if missing:
            notes.append("%s: some parts not found in the log for %s" % (NAMES[r["registry"]], ", ".join(missing)))
    for note in notes:
        print("note: %s" % note)
    if args.json:
        doc = {"figure": FIGURE, "title": TITLE, "command": command, "columns": COLUMNS, "rows": rows,
               "notes": notes, "peers_missing": [],
               "extra": {"machine": machine(), "code": code_under_test(), "deploys_per_registry": args.deploys,
                         "runs": [{k: v for k, v in r.items() if k != "log_tail"} for r in results],
                         "parts_seconds": {r["registry"]: [parts_of(d) for d in r["deploys"]] for r in results}}}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
