"""The control socket's own rules, in-process: a path longer than sun_path, mode 0600, one line each way."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from dewy.master import control


def test_a_deep_workdir_still_gets_a_0600_socket_file_and_answers(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / control.CONTROL_FILE)
    assert len(path) > 108  # too long for sockaddr_un: reached through /proc/self/fd/N/
    server = control.ControlServer(path)
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode) and stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        server.sock.setblocking(True)

        def serve():
            conn = control.ControlConnection(server.sock.accept()[0])
            conn.sock.setblocking(True)
            request = None
            while request is None:
                request = conn.read()
            conn.answer({"ok": True, "echo": request, "allowed": conn.allowed()})
        thread = threading.Thread(target=serve)
        thread.start()
        answer = control.request(path, "pause", {"reason": "x"}, timeout=5)
        thread.join(5)
        assert answer == {"ok": True, "allowed": True, "echo": {"v": 1, "command": "pause", "args": {"reason": "x"}}}
    finally:
        server.close()
    assert not os.path.exists(path)
    with pytest.raises(control.ControlError, match="no dewy master runs there"):
        control.request(path, "status")


def test_a_pause_holds_everything_a_rollback_hold_only_what_is_not_newer(tmp_path):
    from dewy import pause

    assert pause.read(str(tmp_path)) is None and not pause.holds(None, "1.0.0")
    paused = pause.write(str(tmp_path), "freeze")
    assert pause.read(str(tmp_path)) == paused and pause.holds(paused, "9.0.0")
    hold = pause.write(str(tmp_path), "rolled back", newer_than="1.2.0")
    assert pause.holds(hold, "1.0.0") and pause.holds(hold, "1.2.0") and pause.holds(hold, "1.2.0+blue")
    assert not pause.holds(hold, "1.2.1") and not pause.holds(hold, "2.0.0")
    assert pause.clear(str(tmp_path)) and not pause.clear(str(tmp_path)) and pause.read(str(tmp_path)) is None


def test_a_hold_after_a_forward_rollback_keeps_out_everything_not_newer_than_both(tmp_path):
    from dewy import pause

    hold = pause.write(str(tmp_path), "switched", newer_than="1.0.0", also_newer_than=["1.1.0", "1.0.0", None])
    assert hold["also_newer_than"] == ["1.1.0"] and pause.read(str(tmp_path)) == hold
    assert pause.holds(hold, "1.0.5") and pause.holds(hold, "1.1.0") and not pause.holds(hold, "1.1.1")
    assert pause.refuses_left("1.1.0", "1.0.0") and not pause.refuses_left("1.0.0", "1.1.0")
    assert pause.refuses_left("1.1.0", None) and not pause.refuses_left(None, "1.0.0")
    since = pause.write(str(tmp_path), "freeze", since="2026-11-26T14:02:11Z")["since"]
    assert since == "2026-11-26T14:02:11Z", "a repeated pause keeps its first time"


def test_holds_compare_in_the_registrys_scheme_and_an_uncomparable_version_is_said_once(tmp_path, caplog):
    from dewy import pause

    fmt = "YYYY.0M.MICRO"
    hold = pause.write(str(tmp_path), "switched", newer_than="2026.01.1", also_newer_than=["2026.01.2"])
    assert pause.holds(hold, "2026.01.2", fmt) and pause.holds(hold, "2026.01.1", fmt)
    assert not pause.holds(hold, "2026.01.3", fmt) and not pause.holds(hold, "2026.02.1", fmt)
    assert not pause.refuses_left("2026.01.1", "2026.01.2", fmt) and pause.refuses_left("2026.01.2", "2026.01.1", fmt)
    # Compared as semver (the registry's scheme changed since the hold): only the held versions stay out, said once.
    # (Two-part calver: semver, which takes 2026.01.3 as 2026.1.3 as Dewy does, cannot read it.)
    hold = pause.write(str(tmp_path), "switched", newer_than="2026.01", also_newer_than=["2026.02"])
    with caplog.at_level("WARNING", logger="dewy.pause"):
        assert not pause.holds(hold, "2026.03") and not pause.holds(hold, "2026.03")
        assert pause.holds(hold, "2026.02")
    said = [r.getMessage() for r in caplog.records if "cannot compare version 2026.03" in r.getMessage()]
    assert len(said) == 1 and "as semantic versions" in said[0], said
