"""A fleet rollout end to end: five real dewy-master hosts (own workdir, port and host-id each) sharing one
Redis (valkey-server) with `rollout-waves = 20%, 60%` (waves of 1, 3 and 5 hosts) and a 2 s soak.

- Waves happen in the order of the hash of (host id, version), each after the earlier ones soaked.
- A release that crashes on the first wave is refused fleet-wide and never started anywhere else.
- A release that fails in the second wave is refused fleet-wide; the first wave, already on it, goes back.
- A newer good release rolls out to everyone. `dewy fleet` shows all of it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from dewy.fleet import host_order
from helpers import audit_entries, sample_app_source, wait_audit, wait_until

HOSTS = ["host-%d" % i for i in range(1, 6)]
SOAK = 2.0
# An app that crashes at start when $FLEET_TEST_CRASH names its version, else runs the sample app.
WRAPPER = b"""import os, runpy, sys
here = os.path.dirname(os.path.abspath(__file__))
version = open(os.path.join(here, "VERSION")).read().strip()
if os.environ.get("FLEET_TEST_CRASH") == version:
    sys.stderr.write("fleet-test: %s crashes on this host\\n" % version)
    sys.exit(3)
sys.argv[0] = os.path.join(here, "real_app.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def publish(registry, version: str, behaviour: str = "") -> None:
    """Publish the wrapped sample app as version."""
    members = [("app.py", WRAPPER), ("real_app.py", sample_app_source()), ("VERSION", (version + "\n").encode())]
    if behaviour:
        members.append(("BEHAVIOUR", (behaviour + "\n").encode()))
    registry.publish_tar(version, members)


def fleet_json(master) -> dict:
    """`dewy fleet -c INI --json` of one host."""
    out = subprocess.run([sys.executable, "-m", "dewy", "fleet", "-c", str(master.ini), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def serving_times(fleet: dict, version: str, timeout: float) -> dict:
    """host -> when (monotonic) it was first seen serving version; waits until every host does."""
    seen = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(fleet) and time.monotonic() < deadline:
        for host, master in fleet.items():
            status = master.status() or {}
            if host not in seen and status.get("version") == version and status.get("state") == "running":
                seen[host] = time.monotonic()
        time.sleep(0.05)
    assert len(seen) == len(fleet), "not serving %s after %ss: %s\n%s" % (
        version, timeout, sorted(set(fleet) - set(seen)), "\n".join(m.log_tail(30) for m in fleet.values()))
    return seen


def refused_here(master, version: str) -> bool:
    path = master.workdir / ".dewy" / "refused.json"
    return path.exists() and version in json.loads(path.read_text()).get("versions", {})


def app_starts(master, version: str) -> int:
    """How often the master started a generation of version on this host, from its log."""
    return len(re.findall(r"started generation \d+ \(pid \d+, %s\)" % re.escape(version), master.log_text()))


@pytest.fixture
def fleet(redis_server, registry, hosts):
    """Five started masters on one Redis, keyed by host id; the third release crashes on all but its first wave."""
    url = redis_server.url(app="rollout-it")
    canary = host_order(HOSTS, "1.2.0")[0]
    envs = [{} if host == canary else {"FLEET_TEST_CRASH": "1.2.0"} for host in HOSTS]
    # ready = notify: a release that crashes at start fails its readiness whatever the machine's load.
    masters = hosts(5, env=envs, cache=url, ready="notify:20s",
                    **{"rollout-waves": "20%, 60%", "rollout-soak": "%gs" % SOAK})
    for host, master in zip(HOSTS, masters):
        master.settings["host-id"] = host
        master.start()
    # Every host has said hello before the first release, so the first rollout knows all five.
    wait_until(lambda: len(fleet_json(masters[0])["hosts"]) == 5, 20, "five heartbeats")
    return dict(zip(HOSTS, masters))


def test_a_rollout_goes_in_waves_stops_a_bad_release_fleet_wide_and_rolls_back(registry, fleet):
    # 1. The first release, in waves of 1, 2 and 2 hosts, each after the one before soaked.
    publish(registry, "1.0.0")
    served = serving_times(fleet, "1.0.0", 60)
    order = host_order(HOSTS, "1.0.0")
    first, second, third = order[:1], order[1:3], order[3:]
    margin = 0.3  # seen through status files polled every 50 ms
    assert min(served[h] for h in second) >= served[first[0]] + SOAK - margin, served
    assert min(served[h] for h in third) >= max(served[h] for h in first + second) + SOAK - margin, served
    view = fleet_json(fleet[first[0]])
    assert view["rollout"]["version"] == "1.0.0" and view["rollout"]["state"] == "done", view
    assert [[h["host"] for h in w["hosts"]] for w in view["rollout"]["waves"]] == [first, second, third]

    # 2. A release that crashes at start: its first wave refuses it, and nobody else ever starts it.
    canary = host_order(HOSTS, "1.1.0")[0]
    publish(registry, "1.1.0", behaviour="crash-at-start")
    wait_until(lambda: all(refused_here(m, "1.1.0") for m in fleet.values()), 60, "1.1.0 refused everywhere",
               lambda: "\n".join(m.log_tail(20) for m in fleet.values()))
    assert app_starts(fleet[canary], "1.1.0") >= 1
    assert all(app_starts(m, "1.1.0") == 0 for h, m in fleet.items() if h != canary)
    assert all((m.status() or {}).get("version") == "1.0.0" for m in fleet.values())
    # Issue 16 item 21: the hosts that adopted the refusal say what they ran ("1.0.0 → 1.1.0 refused" in
    # `dewy history`), not previous_version null ("nothing → 1.1.0").
    for host, master in fleet.items():
        if host != canary:
            adopted = [e for e in audit_entries(master.workdir) if e.get("version") == "1.1.0"]
            assert [(e["result"], e.get("previous_version")) for e in adopted] == [("refused", "1.0.0")], adopted
    refused = {e["version"]: e for e in fleet_json(fleet[canary])["refused"]}
    assert refused["1.1.0"]["host"] == canary, refused
    stopped = sum(m.log_text().count("rollout of 1.1.0 stopped fleet-wide") for m in fleet.values())
    assert stopped == 1  # one notice for the fleet, not one per host

    # 3. A release that passes its first wave and fails in the second: the first wave goes back to 1.0.0.
    order = host_order(HOSTS, "1.2.0")
    publish(registry, "1.2.0")
    fleet[order[0]].wait_version("1.2.0", timeout=30)
    wait_until(lambda: all(refused_here(m, "1.2.0") for m in fleet.values()), 60, "1.2.0 refused everywhere",
               lambda: "\n".join(m.log_tail(20) for m in fleet.values()))
    fleet[order[0]].wait_version("1.0.0", timeout=30)
    assert all(app_starts(fleet[h], "1.2.0") == 0 for h in order[3:])  # the last wave never started it
    assert sum(app_starts(fleet[h], "1.2.0") for h in order[1:3]) >= 1
    back = wait_audit(fleet[order[0]].workdir, lambda es: [e for e in es if e.get("version") == "1.0.0"
                                                           and e.get("previous_version") == "1.2.0"],
                      "the canary's audit line of going back from 1.2.0 to 1.0.0")
    assert [e["result"] for e in back if e.get("version") == "1.0.0" and e.get("previous_version") == "1.2.0"] \
        == ["deployed"], back
    assert {e["host"] for e in back} == {order[0]}  # the audit names the host by its host-id

    # 4. A newer good release starts a fresh rollout and reaches every host.
    publish(registry, "1.3.0")
    last = fleet[host_order(HOSTS, "1.3.0")[-1]]
    # `dewy status` of a host of the last wave says what it waits for.
    last.wait_for(lambda s: (s.get("rollout") or "").startswith("1.3.0: wave 3 of 3 waits for "), 30,
                  "the last wave to report its wait")
    serving_times(fleet, "1.3.0", 60)
    view = fleet_json(fleet[HOSTS[0]])
    assert view["rollout"]["version"] == "1.3.0"
    assert sorted(h["host"] for h in view["hosts"]) == HOSTS
    assert {h["version"] for h in view["hosts"]} == {"1.3.0"}
    assert {e["version"] for e in view["refused"]} == {"1.1.0", "1.2.0"}
    for master in fleet.values():
        master.assert_no_zombies()
