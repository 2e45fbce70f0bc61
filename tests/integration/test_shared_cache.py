"""Real dewy-master hosts sharing one Redis (valkey-server) with `?registry-ttl=`: they deploy through the
shared registry answer, keep artifacts on their own disk, and a Redis that goes away never stops a deploy."""

from __future__ import annotations

import json

from valkeyserver import PASSWORD, ValkeyServer


def test_hosts_deploy_through_the_shared_answer(redis_server, registry, hosts):
    url = redis_server.url(app="fleet-it", **{"registry-ttl": "1s"})
    registry.publish("1.0.0")
    fleet = hosts(3, cache=url)
    for master in fleet:
        master.start(wait_version="1.0.0")
    registry.publish("1.1.0")
    for master in fleet:
        master.wait_version("1.1.0", timeout=30)
    client = redis_server.client()
    keys = [k.decode() for k in client.keys("dewy/fleet-it/registry/*")]
    answers = [k for k in keys if not k.endswith("/lock")]
    assert len(answers) == 1, keys  # one answer for the whole fleet (nobody refused anything)
    entry = json.loads(client.get(answers[0]))
    assert entry["release"]["version"] == "1.1.0" and entry["error"] is None
    for master in fleet:
        # Artifacts stay on each host's disk; only small values went to Redis.
        assert list((master.workdir / ".dewy" / "cache").glob("1.1.0*")), master.workdir
        assert PASSWORD not in master.log_text()


def test_redis_outage_does_not_stop_deploys(registry, hosts):
    with ValkeyServer() as server:
        url = server.url(app="outage-it", **{"registry-ttl": "1s"})
        registry.publish("1.0.0")
        master = hosts(1, cache=url)[0].start(wait_version="1.0.0")
    # The cache server is gone: the poller asks the registry directly.
    registry.publish("1.1.0")
    master.wait_version("1.1.0", timeout=30)
    log = master.log_text()
    assert log.count("registry answers are not shared until it is back") == 1, log[-3000:]
    assert server.password not in log
