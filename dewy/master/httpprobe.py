"""One non-blocking `GET /path HTTP/1.0` from the master to an app generation (`ready = http:`, `health`).

The master stays single-threaded and never blocks: a Probe is a small state machine over a non-blocking
socket that the arbiter's selector drives (on_event) and its timer table ticks (tick); no http.client.

The listener is shared by every generation (the old one keeps accepting while the new one starts), so
an answer proves nothing unless the process that accepted the connection belongs to the generation
being checked. The probe therefore connects and sends nothing until it has found the accepted socket's
inode (by the connection's addresses: one NETLINK_SOCK_DIAG lookup, or /proc/net/tcp{,6} where netlink
is not available) among the fds of the generation's process group; only then does it send the request,
whole, and read the status line — so attribution does not depend on how the app reads (one that answers
right after its first read, before the blank line ending the request, is attributed like any other).
A listener that accepts only once data arrives (TCP_DEFER_ACCEPT) gets the request line and headers
after HEAD_AFTER, the blank line once the accepting process is known; an answer that comes before it is
known is looked up at once, and one whose server side is gone by then is `other`, saying it could not
be attributed. An answer from another generation is reported as `other` (the caller asks again).
"""

import errno
import os
import socket
import struct

OK, FAILED, OTHER = "ok", "failed", "other"  # a probe's outcome
# How often the probe looks for the accepting process while it waits. One look is a sock_diag lookup
# (~15 us); the process group is scanned only once the connection was accepted.
TICK = 0.002
_FIRST_LINE_MAX = 512
# Not accepted this long after connecting: send the request line and headers (a listener with TCP_DEFER_ACCEPT
# accepts only once data arrives), and the blank line that ends them once the accepting process is known.
HEAD_AFTER = 0.1
UNATTRIBUTED = "could not be attributed"  # in the detail of an answer whose accepting process was gone


class Probe:
    """GET path on a TCP listener. Register fileno() in a selector for events(), call on_event(now) when it
    fires and tick(now) at deadline(now); once `finished`, `outcome` is OK (2xx, 3xx), FAILED or OTHER (accepted
    by a process outside group pgid) and `detail` says what happened."""

    def __init__(self, family: int, address: tuple, path: str, pgid: int, timeout: float, now: float):
        self.path, self.pgid = path, pgid
        self.outcome = self.detail = None
        self.until = now + timeout
        self.timeout = timeout
        self.state = "connecting"
        self.buffer = b""
        self.finished = False
        self.next_tick = now
        self.foreign = False  # accepted by a process outside the group
        self.head_at = now + HEAD_AFTER  # when to send the request head if nobody accepted yet
        self.head_sent = False
        host = address[0]
        # A wildcard listener is reached over loopback.
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        self.target = (host, address[1]) + tuple(address[2:])
        self.listen_port = address[1]
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        code = self.sock.connect_ex(self.target)
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self.finish(FAILED, "cannot connect to %s: %s" % (self.describe_target(), os.strerror(code)))

    def describe_target(self) -> str:
        host, port = self.target[:2]
        return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)

    def fileno(self) -> int:
        return self.sock.fileno()

    def events(self) -> str:
        """"write" while connecting, else "read" (the answer; or, while the accepting process is looked
        for, a connection closed early)."""
        return "write" if self.state == "connecting" else "read"

    def deadline(self) -> float:
        """When tick() must run next: soon while looking for the accepting process, else the timeout."""
        return min(self.until, self.next_tick) if self.state == "accepting" else self.until

    def on_event(self, now: float) -> None:
        """The socket is writable (connected) or readable (the answer)."""
        if self.finished:
            return
        if self.state == "connecting":
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.finish(FAILED, "cannot connect to %s: %s" % (self.describe_target(), os.strerror(code)))
                return
            # Nothing sent yet: who accepted it is known before the app can read (and answer) anything.
            self.state = "accepting"
            self.tick(now)
        elif self.state == "reading":
            self.read()
        elif self.state == "accepting":
            # Answered (after the head sent for a deferred accept) or closed before tick() found the accepting
            # process: look now, while its socket may still be open.
            owner = self.owner()
            if owner is not None:
                self.take_answer()  # before the blank line goes out: an app that closed answers it with a reset
                self.accepted(owner)
                return
            try:
                answered = bool(self.sock.recv(1, socket.MSG_PEEK))
            except OSError:
                answered = False
            if answered:
                self.finish(OTHER, "GET %s was answered before dewy could tell which process accepted it (the "
                                   "answer %s: its socket was closed already)" % (self.path, UNATTRIBUTED))
            else:
                # A generation that retires closes what it accepted: not an answer about the one checked.
                self.finish(OTHER, "connection closed before the accepting process was found")

    def tick(self, now: float) -> None:
        """Look for the accepting process; give up at the timeout."""
        if self.finished:
            return
        if now >= self.until:
            what = "no answer" if self.state == "reading" else "not accepted"
            self.finish(FAILED, "%s within %gs" % (what, self.timeout))
            return
        if self.state != "accepting":
            return
        self.next_tick = now + TICK
        owner = self.owner()
        if owner is not None:
            self.accepted(owner)
        elif now >= self.head_at and not self.head_sent:
            self.head_sent = True  # still in the listen queue: maybe one that waits for data to accept
            self.send(self.head())

    def owner(self):
        """True / False (another process) / None (not accepted yet, or no longer there): who accepted it."""
        return accepted_by(self.listen_port, self.sock.getsockname()[1], self.pgid, self.sock)

    def head(self) -> bytes:
        """The request line and headers, without the blank line that ends them."""
        return ("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: dewy-master\r\n" % (
            self.path, self.describe_target())).encode()

    def accepted(self, owner: bool) -> None:
        """The accepting process is known: send the (rest of the) request and read the answer. Another
        generation's process gets the request all the same (an app should not see a client vanish mid-request);
        its answer is reported as OTHER."""
        self.foreign = not owner
        self.send(b"\r\n" if self.head_sent else self.head() + b"\r\n", answered_ok=True)
        if not self.finished:
            self.state = "reading"
            if b"\n" in self.buffer:
                self.judge()  # answered early and read already (take_answer)

    def send(self, data: bytes, answered_ok: bool = False) -> None:
        """Send a few bytes (into an empty socket buffer: never blocks). answered_ok: the app may have answered
        and closed already (a reset then): the answer is read all the same."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            if not answered_ok:
                self.finish(FAILED, "GET %s: %s" % (self.path, exc.strerror or exc))

    def take_answer(self) -> None:
        """Keep what has arrived of an early answer."""
        try:
            while len(self.buffer) < _FIRST_LINE_MAX:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                self.buffer += chunk
        except OSError:
            pass

    def read(self) -> None:
        try:
            chunk = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if b"\n" not in self.buffer:
                self.finish(FAILED, "GET %s: %s" % (self.path, exc.strerror or exc))
                return
            chunk = b""  # reset after an early answer we kept: judge that answer
        self.buffer += chunk
        if b"\n" not in self.buffer and chunk and len(self.buffer) < _FIRST_LINE_MAX:
            return
        self.judge()

    def judge(self) -> None:
        """Finish on the status line in the buffer (or its absence: the connection closed)."""
        line = self.buffer.split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        if self.foreign and not line:
            self.finish(OTHER, "GET %s: closed without an answer by another generation" % self.path)
            return
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self.finish(FAILED, "GET %s: not an HTTP answer (%r)" % (self.path, line[:80]) if line
                        else "GET %s: connection closed without an answer" % self.path)
            return
        if self.foreign:
            self.finish(OTHER, "GET %s answered %s by another generation" % (self.path, parts[1]))
            return
        code = int(parts[1])
        # 2xx and 3xx are healthy, as for Dewy (container_deploy.go) and Kubernetes' httpGet probes.
        outcome = OK if 200 <= code < 400 else FAILED
        self.finish(outcome, "GET %s answered %s" % (self.path, " ".join(parts[1:])))

    def finish(self, outcome: str, detail: str) -> None:
        """Record the outcome (the first one counts); the owner then unregisters and close()s the socket."""
        if self.finished:
            return
        self.finished = True
        self.state = "done"
        self.outcome, self.detail = outcome, detail

    def close(self) -> None:
        self.sock.close()


def accepted_by(listen_port: int, client_port: int, pgid: int, client=None):
    """Whether the server side of our connection (listen_port <- client_port) is an fd of a process in
    group pgid: True / False (another process has it) / None (not accepted yet, or not found).
    With `client` (our connected socket) the server side is looked up by its addresses over netlink."""
    inode = None
    try:
        if client is None:
            raise OSError("no socket to take the addresses from")
        inode = _diag_inode(client.family, client.getpeername(), client.getsockname())
    except OSError:
        # No netlink (a seccomp filter, an old kernel): scan the whole table. Slow on a busy host: the
        # table lists every connection, TIME_WAIT included (tens of thousands under load).
        inode = _socket_inode(listen_port, client_port)
    if not inode:
        return None
    link = "socket:[%s]" % inode
    for pid in _group_pids(pgid):
        fd_dir = "/proc/%d/fd" % pid
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink("%s/%s" % (fd_dir, name)) == link:
                    return True
            except OSError:
                pass
    return False


_SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
_NETLINK_SOCK_DIAG = 4
_NLMSG_ERROR = 2
_TCP_LISTEN = 10
_NO_COOKIE = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE: match by addresses alone


def _diag_inode(family: int, local: tuple, remote: tuple) -> str | None:
    """The inode of the TCP socket local <- remote (0 / None until a process accepted it), asked of the
    kernel with one exact NETLINK_SOCK_DIAG lookup (what `ss` uses) instead of reading every connection in
    /proc/net/tcp. OSError when netlink cannot be used."""
    def packed(host: str) -> bytes:
        return socket.inet_pton(family, host.split("%")[0]).ljust(16, b"\0")

    # struct inet_diag_req_v2 {family, protocol, ext, pad, states; inet_diag_sockid {sport, dport (big
    # endian), src[4], dst[4], if, cookie[2]}}; src/sport is the socket's own (local) side.
    sockid = (struct.pack("!HH", local[1], remote[1]) + packed(local[0]) + packed(remote[0])
              + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE))
    request = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, 1, 1, 0)  # NLM_F_REQUEST
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.send(header + request)
        # The kernel answers within send(): the reply is queued already, so this never blocks the loop.
        data = nl.recv(8192, socket.MSG_DONTWAIT)
    if len(data) < 20:
        raise OSError("short sock_diag answer")
    kind = struct.unpack_from("=H", data, 4)[0]
    if kind == _NLMSG_ERROR:
        code = -struct.unpack_from("=i", data, 16)[0]
        if code == errno.ENOENT:
            return None  # no such connection (closed already)
        raise OSError(code, "sock_diag: %s" % os.strerror(code))
    if kind != _SOCK_DIAG_BY_FAMILY or len(data) < 16 + 72:
        raise OSError("unexpected sock_diag answer (type %d)" % kind)
    # struct inet_diag_msg {family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode}
    state = data[17]
    remote_port = struct.unpack_from("!H", data, 16 + 6)[0]
    if state == _TCP_LISTEN or remote_port != remote[1]:
        return None  # the lookup fell through to the listener: the connection is not established yet
    inode = struct.unpack_from("=I", data, 16 + 68)[0]
    return str(inode) if inode else None


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket local_port <- remote_port (0 / None until a process accepted it)."""
    want_local, want_remote = ":%04X" % local_port, ":%04X" % remote_port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                return fields[9] if fields[9] != "0" else None
    return None


def _group_pids(pgid: int) -> list:
    """The pids in process group pgid (the leader first)."""
    pids = [pgid]
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == pgid:
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode():
            pids.append(int(name))
    return pids
