"""Fleet rollouts (dewy/fleet.py) and `dewy fleet` (dewy/fleetview.py): waves, soak, refusals, on a memory
cache with a fake clock. The same code runs over every real shared cache in tests/shared_cache_cases.py and end to end
with five dewy-masters in tests/integration/test_fleet.py."""

import socket

import pytest

from dewy import fleet, fleetview
from dewy.cache.memory import MemoryCache
from dewy.config import ConfigError, from_options


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.mark.parametrize("shares, count, sizes", [
    ((10, 50), 20, [2, 10, 20]),
    ((10, 50), 5, [1, 3, 5]),
    ((10, 50), 3, [1, 2, 3]),
    ((10, 50), 1, [1]),
    ((10, 50), 2, [1, 2]),
    ((100,), 4, [4]),
    ((20, 60), 5, [1, 3, 5]),
    ((33.3,), 3, [1, 3]),
    ((25, 50), 4, [1, 2, 4]),
])
def test_wave_sizes_round_up_and_end_with_everyone(shares, count, sizes):
    assert [size for size, _ in fleet.waves(shares, count)] == sizes


def test_host_order_is_stable_per_version_and_differs_between_versions():
    hosts = ["web-%d" % i for i in range(20)]
    assert fleet.host_order(hosts, "1.0.0") == fleet.host_order(list(reversed(hosts)), "1.0.0")
    firsts = {fleet.host_order(hosts, "1.%d.0" % minor)[0] for minor in range(10)}
    assert len(firsts) > 3  # a different host goes first for different versions


def make_fleet(n=5, waves=(20, 60), soak=60.0):
    cache, clock = MemoryCache(), Clock()
    hosts = {"web-%d" % i: fleet.Fleet(cache, "web-%d" % i, waves, soak, clock=clock) for i in range(1, n + 1)}
    for f in hosts.values():
        f.heartbeat("1.0.0", fleet.SERVING, clock.now - 3600, ttl=600)
    return cache, clock, hosts


def test_waves_go_in_order_and_each_waits_for_the_soak():
    cache, clock, hosts = make_fleet()
    rollout = hosts["web-1"].rollout("2.0.0")
    order = rollout["hosts"]
    assert sorted(order) == sorted(hosts) and rollout["waves"] == [1, 3, 5]
    assert rollout["labels"] == ["20%", "60%", "100%"] and rollout["soak"] == 60.0
    first, second, third = order[0], order[1:3], order[3:]
    assert hosts[first].gate("2.0.0") == (True, "wave 1 of 3")
    allowed, why = hosts[second[0]].gate("2.0.0")
    assert not allowed and why == "wave 2 of 3 waits for %s to deploy 2.0.0 (it is serving 1.0.0)" % first
    # The first wave deploys: the second waits for its soak, counted by its heartbeats, then goes.
    start = clock.now
    hosts[first].heartbeat("2.0.0", fleet.SERVING, start, ttl=600)
    clock.now += 30
    hosts[first].heartbeat("2.0.0", fleet.SERVING, start, ttl=600)
    allowed, why = hosts[second[0]].gate("2.0.0")
    assert not allowed and why == "wave 2 of 3 waits for %s to serve 2.0.0 for 30s more (rollout-soak)" % first
    assert not hosts[third[0]].gate("2.0.0")[0]
    clock.now += 30
    hosts[first].heartbeat("2.0.0", fleet.SERVING, start, ttl=600)
    assert hosts[second[0]].gate("2.0.0") == (True, "wave 2 of 3")
    allowed, why = hosts[third[0]].gate("2.0.0")  # the second wave has not deployed yet
    assert not allowed and why.endswith("(and 1 more)"), why
    for host in second:
        hosts[host].heartbeat("2.0.0", fleet.SERVING, clock.now, ttl=600)
    clock.now += 61
    for host in second:
        hosts[host].heartbeat("2.0.0", fleet.SERVING, clock.now - 61, ttl=600)
    assert hosts[third[0]].gate("2.0.0") == (True, "wave 3 of 3")
    # Every host sees the same rollout, whoever asks first, with the soak its first host recorded.
    assert all(f.rollout("2.0.0") == rollout for f in hosts.values())
    impatient = fleet.Fleet(cache, second[0], (20, 60), 1.0, clock=clock)
    assert fleet.rollout_soak(impatient.rollout("2.0.0"), 1.0) == 60.0


def test_a_host_that_stops_beating_never_finishes_its_soak_and_blocks_until_it_vanishes():
    cache, clock, hosts = make_fleet()
    order = hosts["web-1"].rollout("2.0.0")["hosts"]
    hosts[order[0]].heartbeat("2.0.0", fleet.SERVING, clock.now, ttl=600)
    clock.now += 3600  # it died right after deploying: its last heartbeat says it served 0 s
    allowed, why = hosts[order[1]].gate("2.0.0")
    assert not allowed and "for 1m00s more" in why
    cache.delete(fleet.HOSTS + order[0])  # its heartbeat expired: it vanished
    assert hosts[order[1]].gate("2.0.0") == (True, "wave 2 of 3")


def test_a_newcomer_waits_for_every_wave_even_when_the_rollout_knew_one_host():
    cache, clock = MemoryCache(), Clock()
    alone = fleet.Fleet(cache, "web-1", (20, 60), 60.0, clock=clock)
    alone.heartbeat(None, fleet.IDLE, None, ttl=600)
    rollout = alone.rollout("1.0.0")  # started before the others said hello
    assert rollout["hosts"] == ["web-1"] and rollout["waves"] == [1]
    late = fleet.Fleet(cache, "web-2", (20, 60), 60.0, clock=clock)
    late.heartbeat(None, fleet.IDLE, None, ttl=600)
    assert fleet.wave_of(rollout, "web-2") == 1
    allowed, why = late.gate("1.0.0")
    assert not allowed and why.startswith("wave 2 of 2 waits for web-1 to deploy 1.0.0"), why
    alone.heartbeat("1.0.0", fleet.SERVING, clock.now - 60, ttl=600)
    assert late.gate("1.0.0") == (True, "wave 2 of 2")


def test_a_vanished_host_blocks_no_wave_and_a_newcomer_goes_last():
    cache, clock, hosts = make_fleet()
    order = hosts["web-1"].rollout("2.0.0")["hosts"]
    cache.delete(fleet.HOSTS + order[0])  # its heartbeat expired
    assert hosts[order[1]].gate("2.0.0") == (True, "wave 2 of 3")
    late = fleet.Fleet(cache, "web-9", (20, 60), 60.0, clock=clock)
    late.heartbeat("1.0.0", fleet.SERVING, clock.now, ttl=600)
    assert fleet.wave_of(late.rollout("2.0.0"), "web-9") == 3
    assert not late.gate("2.0.0")[0]


def test_a_new_version_starts_a_fresh_rollout_with_its_own_order():
    cache, clock, hosts = make_fleet(n=20, waves=(10, 50))
    a, b = hosts["web-1"].rollout("2.0.0"), hosts["web-1"].rollout("2.1.0")
    assert a["hosts"] != b["hosts"] and b["waves"] == [2, 10, 20]


def test_the_first_refusal_wins_and_is_seen_by_everyone():
    cache, clock, hosts = make_fleet()
    assert hosts["web-2"].refuse("2.0.0", "master: exited with 3") is True
    assert hosts["web-4"].refuse("2.0.0", "crashed too") is False
    assert hosts["web-5"].refusals()["2.0.0"] == {"version": "2.0.0", "host": "web-2",
                                                  "reason": "master: exited with 3", "at": clock.now}


def test_heartbeat_warns_once_when_another_dewy_uses_the_same_host_id():
    cache, clock, hosts = make_fleet(n=1)
    twin = fleet.Fleet(cache, "web-1", (20,), 60.0, clock=clock)
    assert twin.heartbeat("1.0.0", fleet.SERVING, clock.now, ttl=60) is None  # first beat: a restart, not a twin
    warning = hosts["web-1"].heartbeat("1.0.0", fleet.SERVING, clock.now, ttl=60)
    assert warning and "uses host id web-1" in warning and "on %s" % socket.gethostname() in warning
    twin.heartbeat("1.0.0", fleet.SERVING, clock.now, ttl=60)
    assert hosts["web-1"].heartbeat("1.0.0", fleet.SERVING, clock.now, ttl=60) is None  # said once


def test_wave_labels_follow_merged_waves():
    assert fleet.waves((10, 50), 2) == [(1, "10%"), (2, "100%")]
    assert fleet.waves((10, 50), 20) == [(2, "10%"), (10, "50%"), (20, "100%")]
    assert fleet.waves((100,), 4) == [(4, "100%")]


def test_fleet_view_shows_waves_who_waits_and_refusals():
    cache, clock, hosts = make_fleet()
    rollout = hosts["web-1"].rollout("2.0.0")
    first = rollout["hosts"][0]
    hosts[first].heartbeat("2.0.0", fleet.SERVING, clock.now - 10, ttl=600)
    alive = hosts["web-1"].hosts()
    view = fleetview.rollout_view(rollout, alive, {}, 5.0, clock.now)  # the rollout's own soak (60 s) counts
    assert view["state"] == "in progress"
    assert [len(w["hosts"]) for w in view["waves"]] == [1, 2, 2]
    assert view["waves"][0]["hosts"] == [{"host": first, "status": "soaking (50s left)"}]
    assert view["waves"][1]["waiting_for"] == ["%s to serve 2.0.0 for 50s more (rollout-soak)" % first]
    assert [w["share"] for w in view["waves"]] == ["20%", "60%", "100%"]
    stopped = fleetview.rollout_view(rollout, alive, {"2.0.0": {"host": first}}, 60.0, clock.now)
    assert stopped["state"] == "stopped"
    data = {"app": "shop", "cache": "redis://h:6379/0", "rollout_waves": ["20%", "60%"],
            "hosts": fleetview.host_rows(alive), "rollout": view,
            "refused": [{"version": "1.9.0", "host": "web-3", "at": "2026-11-26T10:00:00Z", "reason": "crashed"}]}
    text = fleetview.render(data, clock.now)
    assert "fleet of app shop in redis://h:6379/0: 5 hosts" in text
    assert "rollout of 2.0.0: in progress" in text and "wave 2 (60%)" in text
    assert "1.9.0: failed on web-3 at 2026-11-26T10:00:00Z: crashed" in text
    empty = fleetview.render(dict(data, hosts=[], rollout=None, refused=[]), clock.now)
    assert "No host has written a heartbeat here" in empty and "app key is shop" in empty


@pytest.mark.parametrize("settings, message", [
    ({"rollout-waves": "10%, 50%"}, "needs a cache the fleet shares"),
    ({"rollout-waves": "50%, 10%", "cache": "redis://h:6379/0"}, "expected increasing percentages"),
    ({"rollout-waves": "10", "cache": "redis://h:6379/0"}, "expected increasing percentages"),
    ({"rollout-waves": "0%", "cache": "redis://h:6379/0"}, "expected increasing percentages"),
    ({"rollout-waves": "120%", "cache": "redis://h:6379/0"}, "expected increasing percentages"),
    ({"host-id": "web/1"}, "expected ASCII letters, digits"),
    ({"rollout-soak": "soon"}, "rollout-soak"),
])
def test_bad_rollout_settings_are_one_line_errors(settings, message):
    with pytest.raises(ConfigError) as err:
        from_options(dict({"registry": "file:///srv/r", "mode": "assets"}, **settings))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rollout_settings_are_read():
    config = from_options({"registry": "file:///srv/r", "mode": "assets", "rollout-waves": "10%, 50%",
                           "rollout-soak": "2m", "host-id": "web-3.eu", "cache": "consul://c:8500/dewy"})
    assert (config.rollout_waves, config.rollout_soak, config.host_id) == ((10.0, 50.0), 120.0, "web-3.eu")
