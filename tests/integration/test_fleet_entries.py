"""What other hosts write into the shared cache is data (dewy/fleet.py): a heartbeat, a refusal and a rollout
planted in a real Redis (valkey-server) with terminal escapes, megabyte reasons and a malformed wave plan are
shown by `dewy fleet` escaped and bounded, and a poller given them keeps serving (SECURITY.md, "The shared
cache")."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import wait_until


def _fleet_text(master) -> str:
    out = subprocess.run([sys.executable, "-m", "dewy", "fleet", "-c", str(master.ini)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_hostile_fleet_entries_are_escaped_bounded_and_not_followed(redis_server, registry, hosts):
    app = "hostile-entries"
    registry.publish("1.0.0")
    master = hosts(1, cache=redis_server.url(app=app), interval="0.3s", **{"rollout-waves": "50%",
                                                                              "host-id": "web-1"})[0]
    master.start(wait_version="1.0.0")
    client = redis_server.client()
    wait_until(lambda: client.get("dewy/%s/fleet/hosts/web-1" % app), 10, "our heartbeat")
    escape = "\x1b]0;owned\x07\x1b[2J"
    client.set("dewy/%s/fleet/hosts/evil" % app, json.dumps({
        "host": "evil" + escape, "version": "6.6.6" + escape, "state": "serving", "seen": 2e9, "expires": 2e9,
        "since": 1, "why": "x" * 1_000_000, "target": escape}), ex=600)
    client.set("dewy/%s/fleet/refused/2.0.0" % app, json.dumps({
        "version": "2.0.0", "host": "evil" + escape, "reason": escape + "y" * 1_000_000, "at": 1}), ex=600)
    client.set("dewy/%s/fleet/rollout/1.1.0" % app, json.dumps({
        "version": "1.1.0", "started": 1, "by": escape, "hosts": ["web-1", {"x": 1}], "waves": ["a", None]}), ex=600)
    text = _fleet_text(master)
    assert "\x1b" not in text and "\x07" not in text, repr(text[:2000])
    assert "\\x1b" in text  # shown escaped, not dropped
    assert len(text) < 20_000, len(text)
    # The poller keeps going: the malformed rollout of 1.1.0 is not followed, 1.1.0 still rolls out.
    registry.publish("1.1.0")
    master.wait_version("1.1.0", timeout=30)
    assert "Traceback" not in master.log_text()
