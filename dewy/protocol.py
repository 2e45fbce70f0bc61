"""JSON-lines messages between the master and the poller worker over a socketpair, one small class each.

`parse(msg)` turns a received dict into its message class (`Deployed`, `Status`, ...; `Unknown` for a
type this side does not know); `Deployed.from_dict(d)` does the same for one type. Version-tolerant both
ways: a field the sender does not send reads as its default, a field this side does not know is ignored
(so an upgraded master talks to an older poller and back). Plain classes with __slots__, not dataclasses:
the long-lived master imports this module and stays lean (docs/ARCHITECTURE.md, "Lean rule").
"""

import json
import socket

VERSION = 1
MAX_LINE = 1 << 20  # a message larger than this is a bug, not data


class ProtocolError(Exception):
    """The peer sent something that is not a protocol message."""


class Message:
    """One message type: `type` on the wire, FIELDS = ((name, default), ...) its fields in order."""

    type = ""
    FIELDS: tuple = ()
    __slots__ = ()

    def __init__(self, **fields):
        for name, default in self.FIELDS:
            setattr(self, name, fields.pop(name, default))
        if fields:
            raise TypeError("%s takes no field %s" % (type(self).__name__, ", ".join(sorted(fields))))

    @classmethod
    def from_dict(cls, d: dict) -> "Message":
        """The message in a received dict: missing fields read as their defaults, unknown ones are ignored."""
        return cls(**{name: d[name] for name, _ in cls.FIELDS if name in d})

    def to_dict(self) -> dict:
        """The fields as a dict (without `v` and `type`)."""
        return {name: getattr(self, name) for name, _ in self.FIELDS}

    def __eq__(self, other):
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in self.to_dict().items()))


def _message(name: str, type_: str, *fields, doc: str) -> type:
    """A Message subclass: fields are names (default None) or (name, default) pairs."""
    pairs = tuple(f if isinstance(f, tuple) else (f, None) for f in fields)
    return type(name, (Message,), {"type": type_, "FIELDS": pairs, "__slots__": tuple(n for n, _ in pairs),
                                   "__doc__": doc})


# master -> poller
Config = _message("Config", "config", "config", "current",
                  doc="The first message: Config.to_json() and what runs now ({version, release_dir} or None).")
Reload = _message("Reload", "reload", "config", "current", doc="After SIGHUP: the config read again.")
Deployed = _message("Deployed", "deployed", "version", ("ok", False), "error", "generation", "release_dir",
                    ("retry", False), ("paused", False),
                    doc="The answer to `deploy`; retry: not the release's fault, try again later; paused (with "
                        "retry): deploys were paused when it came, the master did not switch.")
Rollback = _message("Rollback", "rollback", "version", "to_version", "error", ("operator", False),
                    doc="The master went back from version to to_version (a crash loop, or `dewy rollback`).")
Lost = _message("Lost", "lost", "version", "release_dir", "error",
                doc="The release dir of what the master ran is gone: deploy afresh.")
Ping = _message("Ping", "ping", doc="Liveness check: answer `pong`.")
Stop = _message("Stop", "stop", "reason", doc="Finish and exit 0 (reason: dewy stops, notify it).")
Spawned = _message("Spawned", "spawned", "reason", "version", "generation",
                   doc="The master started an app generation (for the restart metrics).")
PollNow = _message("PollNow", "poll-now", "id", doc="Poll now; id comes back as the status's poll_request.")
# poller -> master
Deploy = _message("Deploy", "deploy", "version", "tag", "release_dir", "artifact", "sha256", "previous_version",
                  doc="The release is unpacked in release_dir: please switch.")
# What the poller says it does (dewy/poller/states.py): in every `status`, and alone as `state` when it changes.
STATED = ("state", "reason", "reason_text", "target", "held", "since")
Status = _message("Status", "status", "last_poll", "latest_version", "last_error", "poll_request", "next_poll",
                  "rollout", "calver", *STATED, doc="After every poll: what the poller saw and does.")
State = _message("State", "state", *STATED, "poll_request",
                 doc="What the poller does now, when it changes between polls (a poll starts, a deploy's steps).")
EndHold = _message("EndHold", "end-hold", "newer_than", "why",
                   doc="The rollback's hold naming newer_than is over (the poller decides, the master removes it).")
Progress = _message("Progress", "progress", "version", "artifact", "done", "total", "percent", "mib_per_s",
                    "eta_s", doc="A download under way (at most once a second).")
Pong = _message("Pong", "pong", doc="The answer to `ping`.")

MESSAGES = {cls.type: cls for cls in (Config, Reload, Deployed, Rollback, Lost, Ping, Stop, Spawned, PollNow,
                                      Deploy, Status, State, EndHold, Progress, Pong)}


class Unknown(Message):
    """A message of a type this side does not know (a newer peer): logged and ignored by the receiver."""

    __slots__ = ("type", "fields")

    def __init__(self, type_: str, fields: dict):
        self.type, self.fields = type_, fields

    def to_dict(self) -> dict:
        return dict(self.fields)


def parse(msg: dict) -> Message:
    """The message class instance for a received dict (Unknown for a type not in MESSAGES)."""
    cls = MESSAGES.get(msg.get("type"))
    if cls is None:
        return Unknown(str(msg.get("type")), {k: v for k, v in msg.items() if k not in ("v", "type")})
    return cls.from_dict(msg)


class Channel:
    """One end of the master <-> poller pipe: send dicts, receive dicts."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = b""
        self.closed = False

    def fileno(self) -> int:
        """The descriptor to wait on for incoming messages."""
        return self.sock.fileno()

    def send(self, type_, **fields) -> None:
        """Send one message (a Message, or its type and fields); raises OSError when the peer is gone."""
        if isinstance(type_, Message):
            type_, fields = type_.type, dict(type_.to_dict(), **fields)
        msg = {"v": VERSION, "type": type_, **fields}
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        # Blocking send: messages are small and the peer always reads; the socket
        # may be non-blocking for receiving, so write in a loop.
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                import select
                select.select([], [self.sock], [], 5.0)
                continue
            view = view[n:]

    def receive(self) -> list:
        """Read what is available and return the complete messages; [] and .closed on EOF."""
        try:
            chunk = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return []
        self._buf += chunk
        if len(self._buf) > MAX_LINE and b"\n" not in self._buf:
            raise ProtocolError("message larger than %d bytes" % MAX_LINE)
        *lines, self._buf = self._buf.split(b"\n")
        messages = []
        for line in lines:
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                raise ProtocolError("not JSON: %r" % line[:200]) from exc
            if not isinstance(msg, dict) or "type" not in msg:
                raise ProtocolError("not a message: %r" % line[:200])
            messages.append(msg)
        return messages

    def close(self) -> None:
        """Close this end."""
        self.closed = True
        self.sock.close()
