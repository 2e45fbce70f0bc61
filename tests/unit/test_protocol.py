"""The pipe protocol's message classes: one per type, version-tolerant both ways, over a real socketpair."""

from __future__ import annotations

import socket

import pytest

from dewy import protocol
from dewy.protocol import Channel, Deploy, Deployed, Status, Unknown, parse


def test_each_message_reads_its_fields_ignores_unknown_ones_and_defaults_missing_ones():
    msg = parse({"v": 1, "type": "deployed", "version": "1.1.0", "ok": True, "from_a_newer_master": 1})
    assert isinstance(msg, Deployed) and (msg.version, msg.ok, msg.error, msg.retry) == ("1.1.0", True, None, False)
    assert not hasattr(msg, "from_a_newer_master")
    assert Deploy.from_dict({"version": "2.0.0"}).release_dir is None
    other = parse({"v": 1, "type": "from-the-future", "x": 1})
    assert isinstance(other, Unknown) and other.type == "from-the-future" and other.to_dict() == {"x": 1}
    with pytest.raises(TypeError, match="no field nope"):
        Status(nope=1)
    assert {cls.type for cls in protocol.MESSAGES.values()} == set(protocol.MESSAGES)


def test_messages_travel_over_a_channel():
    a, b = socket.socketpair()
    ours, theirs = Channel(a), Channel(b)
    try:
        ours.send(Deployed(version="1.0.0", ok=False, error="boom", retry=True))
        ours.send("status", latest_version="1.2.0", mood="idle")  # a field this side does not know yet
        got = [parse(m) for m in theirs.receive()]
        assert got == [Deployed(version="1.0.0", ok=False, error="boom", retry=True), Status(latest_version="1.2.0")]
    finally:
        ours.close()
        theirs.close()
