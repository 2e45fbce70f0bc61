"""`dewy history`: the audit log as a table, newest first, through the real command line."""

from __future__ import annotations

import json

from dewy import audit, cli


def fill(workdir) -> None:
    audit.record(str(workdir), {"version": "1.0.0", "result": "deployed", "time": "2026-11-26T06:00:00Z"})
    audit.record(str(workdir), {"version": "1.1.0", "previous_version": "1.0.0", "result": "deployed",
                                "switch_seconds": 1.25, "time": "2026-11-26T07:00:00Z"})
    audit.record(str(workdir), {"version": "1.2.0", "previous_version": "1.1.0", "result": "refused",
                                "error": "checksum mismatch", "time": "2026-11-26T08:00:00Z"})
    audit.record(str(workdir), {"version": "1.1.0", "previous_version": "1.0.0", "to_version": "1.0.0",
                                "result": "rolled-back", "error": "crashed 3 times", "time": "2026-11-26T09:00:00Z"})


def test_history_newest_first_with_switch_and_reason(tmp_path, capsys):
    fill(tmp_path)
    assert cli.main(["history", "--workdir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "TIME                  VERSION          RESULT       SWITCH  REASON",
        "2026-11-26T09:00:00Z  1.1.0 → 1.0.0    rolled-back  -       crashed 3 times",
        "2026-11-26T08:00:00Z  1.1.0 → 1.2.0    refused      -       checksum mismatch",
        "2026-11-26T07:00:00Z  1.0.0 → 1.1.0    deployed     1.2s    -",
        "2026-11-26T06:00:00Z  nothing → 1.0.0  deployed     -       -",
    ]


def test_history_count_json_and_exit_codes(tmp_path, capsys):
    assert cli.main(["history", "--workdir", str(tmp_path)]) == 1
    assert "no history in %s" % tmp_path in capsys.readouterr().err
    fill(tmp_path)
    assert cli.main(["history", "--workdir", str(tmp_path), "-n", "2", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["result"] for e in entries] == ["rolled-back", "refused"]
    assert cli.main(["history", "--workdir", str(tmp_path), "-n", "0"]) == 2
    assert "-n expects a positive number of entries, got '0'" in capsys.readouterr().err
