"""Archives that fail to unpack because of what they hold (`a` then `a/b`, a symlink loop, a name over 255
bytes) are the release's fault: refused once, never unpacked again at every poll, while the old version keeps
serving (they used to fail with an errno and were retried forever as a host problem)."""

from __future__ import annotations

import io
import tarfile

import pytest

from helpers import audit_entries, wait_audit


def _tar(members) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


CASES = {
    "file-then-below-it": [("a", "file", b"x"), ("a/b", "file", b"y")],
    "symlink-loop": [("l1", "sym", "l2"), ("l2", "sym", "l1"), ("l1/x", "file", b"y")],
    "name-over-255-bytes": [("x" * 300, "file", b"y")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_archive_is_refused_once_not_retried(case, make_master, registry):
    registry.publish("1.0.0")
    master = make_master(interval="0.2s").start(wait_version="1.0.0")
    registry.publish_bytes("1.1.0", _tar(CASES[case]))
    wait_audit(master.workdir, lambda es: any(e.get("version") == "1.1.0" and e.get("result") == "refused"
                                              for e in es), "1.1.0 refused")
    polls = master.status().get("last_poll")
    master.wait_for(lambda s: s.get("last_poll") != polls, 10, "a later poll")
    polls = master.status().get("last_poll")
    master.wait_for(lambda s: s.get("last_poll") != polls, 10, "another poll")
    master.wait_version("1.0.0", timeout=5)
    attempts = [e for e in audit_entries(master.workdir) if e.get("version") == "1.1.0"]
    assert len(attempts) == 1, attempts
    assert "malformed archive" in attempts[0].get("error", ""), attempts
    assert ".tmp" not in attempts[0].get("error", "")  # no per-attempt temp path in the reason
    assert master.log_text().count("malformed archive") <= 3, master.log_tail()
