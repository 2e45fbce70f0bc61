"""The sd_notify protocol, both ways: dewy tells systemd, and apps tell dewy they are ready."""

import logging
import os
import socket
import struct

log = logging.getLogger("dewy.master")

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _address(path: str) -> str:
    # A leading '@' names a socket in the abstract namespace (sd_notify(3)).
    return "\0" + path[1:] if path.startswith("@") else path


class SystemdNotifier:
    """Sends state changes to systemd when the master runs under a Type=notify unit."""

    def __init__(self, path: str | None, watchdog_usec: int = 0):
        self.path = path
        self.watchdog_usec = watchdog_usec  # WatchdogSec= of the unit, 0 when off

    @classmethod
    def from_environment(cls) -> "SystemdNotifier":
        """Take NOTIFY_SOCKET and WATCHDOG_* out of the environment (children must not inherit them)."""
        path = os.environ.pop("NOTIFY_SOCKET", None) or None
        usec = os.environ.pop("WATCHDOG_USEC", "")
        pid = os.environ.pop("WATCHDOG_PID", "")
        # sd_watchdog_enabled(3): the watchdog is ours only if WATCHDOG_PID is unset or our pid.
        watchdog = int(usec) if usec.isdigit() and pid in ("", str(os.getpid())) else 0
        return cls(path, watchdog)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec=), None when off."""
        return self.watchdog_usec / 2e6 if self.path and self.watchdog_usec else None

    def send(self, **fields) -> bool:
        """Send `KEY=value` lines (READY=1, STATUS=...); False when not under systemd or it failed."""
        if not self.path:
            return False
        payload = "\n".join("%s=%s" % (k, v) for k, v in fields.items()).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.sendto(payload, _address(self.path))
            return True
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.path, exc)
            return False
        finally:
            sock.close()


class NotifyListener:
    """The NOTIFY_SOCKET dewy hands to apps (ready = notify); reports who said what."""

    def __init__(self, path: str, sock: socket.socket | None = None, owner=None):
        """Bind path (or adopt sock, after an upgrade). owner (process.Credentials, the `user` setting): the
        socket file is given to that user, so the app running as them may send to it."""
        self.path = path
        if sock is None:
            sock = self._bind(path, owner)
        self.sock = sock

    @staticmethod
    def _bind(path: str, owner=None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if not path.startswith("@"):
            # unlink, then bind: bind(2) creates a new file and never follows a symlink planted at path.
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        # The kernel stamps every datagram with the sender's pid, so an app cannot speak for another.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        old_umask = os.umask(0o177)  # mode 0600 from the start (a chmod by path could be redirected)
        try:
            sock.bind(_address(path))
        finally:
            os.umask(old_umask)
        if owner is not None and not path.startswith("@"):
            # lchown: were the file swapped for a symlink meanwhile, only that symlink would change owner.
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
        sock.setblocking(False)
        return sock

    def fileno(self) -> int:
        """The descriptor to wait on."""
        return self.sock.fileno()

    def receive(self) -> list:
        """Every pending message as (sender pid, {KEY: value})."""
        messages = []
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CRED.size))
            except (BlockingIOError, InterruptedError):
                return messages
            pid = None
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CRED.unpack(cdata[:_CRED.size])[0]
            fields = {}
            for line in data.decode("utf-8", "replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key] = value
            messages.append((pid, fields))

    def close(self) -> None:
        """Close the socket and remove its file (an in-place upgrade hands the fd over instead: no close)."""
        self.sock.close()
        if not self.path.startswith("@"):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def notify_socket_path(state_dir: str) -> str:
    """Where the app-facing notify socket lives: in dewy's state dir, or abstract if that path is too long."""
    path = os.path.join(state_dir, "notify.sock")
    if len(path.encode()) < 100:  # sun_path holds 108 bytes
        return path
    return "@dewy-notify-%d" % os.getpid()
