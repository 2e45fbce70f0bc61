"""systemd socket activation: adopt the listening sockets systemd passes instead of binding them.

With a `dewy.socket` unit, systemd owns the sockets and starts dewy-master with them as fds 3.. and
LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES set (sd_listen_fds(3)). Because the sockets outlive the
master, even a restart of the master itself (`systemctl restart dewy`) refuses no connection: the
kernel queues them while nothing accepts. Every `port` entry must be among the passed sockets and
every passed socket must be a `port` entry; anything else is a configuration mismatch and a clear
start-up error rather than a silently different set of listeners.
"""

import logging
import os
import socket

from . import sockets

log = logging.getLogger("dewy.master")

SD_LISTEN_FDS_START = 3
ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """The sockets systemd passed do not match the configured ports; str() says which and how."""


def take_environment(environ=os.environ) -> tuple:
    """(fds, names) passed to this process by systemd, or ((), ()) when none; removes the variables.

    They are removed whatever they say (sd_listen_fds with unset_environment): the poller and the app
    must not see them, and an in-place upgrade (same pid) must not adopt fds 3.. a second time.
    """
    count, pid, names = (environ.pop(name, None) for name in ENV)
    if not count or pid != str(os.getpid()):
        return (), ()
    try:
        n = int(count)
    except ValueError:
        raise ActivationError("LISTEN_FDS=%r is not a number" % count) from None
    fds = tuple(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n))
    name_list = tuple(names.split(":")) if names else ()
    if name_list and len(name_list) != n:
        name_list = ()  # sd_listen_fds_with_names(3) ignores names that do not match the count
    return fds, name_list


def _describe(sock: socket.socket) -> str:
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = address.decode(errors="replace") if isinstance(address, bytes) else address
        return "unix:" + (path.replace("\0", "@", 1) if path.startswith("\0") else path)
    if sock.family == socket.AF_INET6:
        return "[%s]:%d" % address[:2]
    return "%s:%d" % address


class InheritedListener(sockets.Listener):
    """A listener systemd owns: closing it never removes its unix socket file (systemd keeps listening)."""

    def close(self) -> None:
        """Close the master's descriptor only."""
        self.sock.close()


def _wanted(spec: str) -> list:
    """The (family, address) pairs an inherited socket may have to serve spec (compared with getsockname())."""
    family, address = sockets.parse_address(spec)
    if family == socket.AF_UNIX:
        return [(family, address)]
    wanted = [(family, tuple(address[:2]))]
    if spec.isdigit():
        # A bare port means every address; systemd's `ListenStream=8000` binds [::]:8000 (dual stack).
        wanted.append((socket.AF_INET6, ("::", int(spec))))
    return wanted


def _actual(sock: socket.socket):
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return sock.family, address.decode() if isinstance(address, bytes) else address
    return sock.family, tuple(address[:2])


def adopt(specs, fds, names=()) -> list:
    """Listeners for specs (config order) made of the inherited fds, matched by address; ActivationError else.

    A passed socket whose LISTEN_FDNAMES name is a spec's name (the spec, or its fdname with `_` for
    `:`) must listen where that spec says; systemd's default name (the unit's) matches by address only.
    """
    specs = list(specs)
    inherited = []
    for i, fd in enumerate(fds):
        name = names[i] if i < len(names) else ""
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError("systemd passed fd %d, which is not a socket (%s)" % (fd, exc.strerror)) from None
        sock.set_inheritable(False)
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ActivationError("systemd passed fd %d (%s), which is not a listening stream socket; "
                                  "use ListenStream= in the socket unit" % (fd, name or _describe(sock)))
        inherited.append((fd, name, sock))
    by_spec = {}
    for fd, name, sock in inherited:
        actual = _actual(sock)
        matches = [s for s in specs if s not in by_spec and actual in _wanted(s)]
        named = [s for s in specs if name and name in (s, s.replace(":", "_"))]
        if named and named[0] not in matches:
            raise ActivationError("systemd socket fd %d is named %s but listens on %s, not on %s"
                                  % (fd, name, _describe(sock), named[0]))
        if not matches:
            raise ActivationError(
                "systemd passed a socket on %s (fd %d%s) that no `port` entry names (port = %s); make "
                "the socket unit's ListenStream= and dewy's port the same addresses"
                % (_describe(sock), fd, ", name " + name if name else "", ", ".join(specs) or "nothing"))
        by_spec[matches[0]] = InheritedListener(matches[0], sock)
    missing = [s for s in specs if s not in by_spec]
    if missing:
        raise ActivationError(
            "port %s is not among the sockets systemd passed (%s); add it as ListenStream= to the socket "
            "unit, or remove it from port" % (", ".join(missing), ", ".join(
                _describe(sock) for _, _, sock in inherited) or "none"))
    return [by_spec[s] for s in specs]


def listeners(specs, backlog: int) -> list:
    """The master's listeners: the sockets systemd passed (when it did), else freshly bound ones."""
    fds, names = take_environment()
    if not fds:
        return sockets.bind_all(specs, backlog)
    adopted = adopt(specs, fds, names)
    log.info("listening on %d socket(s) passed by systemd (socket activation): %s", len(adopted),
             ", ".join(l.spec for l in adopted))
    return adopted
