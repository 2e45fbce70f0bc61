"""Listening sockets the master owns and hands, unchanged, to every app generation."""

import errno
import os
import socket
import stat

FIRST_FD = 3  # sd_listen_fds(3) and Server::Starter both start handing sockets at fd 3


class ListenError(Exception):
    """A configured address cannot be listened on."""


class Listener:
    """One bound, listening socket and the address text it was configured with."""

    def __init__(self, spec: str, sock: socket.socket):
        self.spec = spec
        self.sock = sock

    def fileno(self) -> int:
        """The master's descriptor for this socket."""
        return self.sock.fileno()

    @property
    def fdname(self) -> str:
        """A name for LISTEN_FDNAMES (systemd forbids ':' in names)."""
        return self.spec.replace(":", "_")[:255]

    @property
    def unix_path(self) -> str | None:
        """The socket file of a unix listener, else None."""
        return self.spec[len("unix:"):] if self.spec.startswith("unix:") else None

    def close(self) -> None:
        """Stop listening and remove the socket file of a unix listener."""
        path = self.unix_path
        self.sock.close()
        if path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def __repr__(self):
        return "<Listener %s fd=%d>" % (self.spec, self.sock.fileno())


def parse_address(spec: str):
    """(family, address) for a listen spec: `8000`, `host:8000`, `[v6]:8000` or `unix:/path`."""
    if spec.startswith("unix:"):
        return socket.AF_UNIX, spec[len("unix:"):]
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]:")
        return socket.AF_INET6, (host, int(port))
    host, sep, port = spec.rpartition(":")
    if not sep:
        # A bare port listens on every IPv4 address, as Server::Starter does.
        return socket.AF_INET, ("0.0.0.0", int(spec))
    try:
        socket.inet_pton(socket.AF_INET, host)
        # A numeric address needs no resolver (nor the idna codec a str host to getaddrinfo imports).
        return socket.AF_INET, (host, int(port))
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError("cannot listen on %s: %s" % (spec, exc.strerror)) from None
    family, _, _, _, address = infos[0]
    return family, address[:2] if family == socket.AF_INET else address


UNIX_SOCKET_MODE = 0o666  # like systemd's SocketMode= default: who may connect is decided by the directory


def _bind_unix(sock: socket.socket, path: str) -> None:
    """Bind a unix listener with mode 0666 whatever the umask (set while binding, never by a chmod of the path)."""
    old_umask = os.umask(0o777 & ~UNIX_SOCKET_MODE)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)


def _remove_stale_unix_socket(spec: str, path: str) -> None:
    """Delete a socket file left by a dead process; refuse to touch a live socket or other files."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError("cannot listen on %s: %s exists and is not a socket" % (spec, path))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody accepts on it: stale
        return
    finally:
        probe.close()
    raise ListenError("cannot listen on %s: another process is listening on it" % spec)


def bind(spec: str, backlog: int) -> Listener:
    """Bind and listen on one configured address; ListenError says why not."""
    family, address = parse_address(spec)
    if family == socket.AF_UNIX:
        _remove_stale_unix_socket(spec, address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if family == socket.AF_UNIX:
            _bind_unix(sock, address)
        else:
            sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ListenError("cannot listen on %s: %s" % (spec, reason)) from None
    return Listener(spec, sock)


def bind_all(specs, backlog: int, reuse: dict | None = None) -> list:
    """Listeners for specs in order, taking already-open ones from `reuse` (spec -> Listener).

    Either every spec is listening on return, or ListenError is raised and the
    sockets this call opened are closed again (the reused ones are left alone).
    """
    reuse = reuse or {}
    listeners, opened = [], []
    try:
        for spec in specs:
            if spec in reuse:
                listeners.append(reuse[spec])
                continue
            try:
                listener = bind(spec, backlog)
            except ListenError as exc:
                held = _same_port(spec, reuse.values())
                if held is None or "already in use" not in str(exc):
                    raise
                # The running app holds its own copy of that socket: closing ours would not free the port.
                raise ListenError(
                    "cannot listen on %s: dewy itself listens on that port as %s (the running app holds that "
                    "socket too), so a reload cannot bind it with another address; restart dewy to change it, "
                    "or remove the port in one reload and add it back in the next" % (spec, held.spec)) from None
            opened.append(listener)
            listeners.append(listener)
    except ListenError:
        for listener in opened:
            listener.close()
        raise
    return listeners


def _same_port(spec: str, listeners) -> "Listener | None":
    """The listener among listeners on the same TCP port as spec (another address text), or None."""
    if spec.startswith("unix:"):
        return None
    port = spec.rpartition(":")[2]
    for listener in listeners:
        if listener.unix_path is None and listener.spec != spec and listener.spec.rpartition(":")[2] == port:
            return listener
    return None


def port_change(specs, listeners) -> "str | None":
    """After USR2: what differs between the configured `port` specs and the listeners kept running, said with
    what to do (a HUP applies it); None when they agree."""
    running = [l.spec for l in listeners]
    if list(specs) == running:
        return None
    return ("port changed (%s; listening on %s): USR2 keeps the running sockets, send HUP to apply a port change"
            % (", ".join(specs) or "nothing", ", ".join(running) or "nothing"))


def adopt(spec: str, fd: int) -> Listener:
    """A Listener for a socket inherited across the master's in-place re-exec."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return Listener(spec, sock)


def app_environment(listeners) -> dict:
    """The socket-passing variables of both protocols (LISTEN_PID is added in the child)."""
    # Server::Starter names a unix socket by its bare path ("/run/app.sock=5").
    env = {
        "SERVER_STARTER_PORT": ";".join(
            "%s=%d" % (l.unix_path or l.spec, FIRST_FD + i) for i, l in enumerate(listeners)),
        "LISTEN_FDS": str(len(listeners)),
        "LISTEN_FDNAMES": ":".join(l.fdname for l in listeners),
    }
    return env
