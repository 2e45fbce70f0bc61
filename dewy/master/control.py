"""The master's control socket: workdir/.dewy/control.sock, local only, one JSON request and answer per connection.

Protocol (docs/ARCHITECTURE.md, "Control socket"): the client connects, sends one line
`{"v": 1, "command": NAME, "args": {...}}`, reads one line `{"ok": true, ...}` or
`{"ok": false, "error": TEXT}`, and the master closes the connection. The socket file is mode 0600 in
the 0700 state dir, and the master also checks the peer's uid (SO_PEERCRED): only dewy's user or root.
Never blocking: connections are non-blocking and read in the master's selector loop, with a deadline.

A path longer than sun_path allows is reached through /proc/self/fd/<dir fd>/control.sock (bind and
connect alike), so deep workdirs work without the abstract namespace (which file modes do not protect).
"""

import json
import os
import socket
import stat
import struct

CONTROL_FILE = "control.sock"
MAX_REQUEST = 65536
REQUEST_TIMEOUT = 5.0  # a client that does not send its line within this is dropped
_SUN_PATH_MAX = 100


class ControlError(Exception):
    """The control socket cannot be reached (no master runs) or answered garbage."""


def _short_path(path: str):
    """(a path usable in sockaddr_un, the dir fd to close afterwards or None)."""
    if len(path.encode()) < _SUN_PATH_MAX:
        return path, None
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return "/proc/self/fd/%d/%s" % (fd, os.path.basename(path)), fd


def _inode(path: str) -> "tuple | None":
    """(device, inode) of the file at path (not followed), None when there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class ControlServer:
    """The listening control socket of one master."""

    def __init__(self, path: str):
        self.path = path
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                # Left by a master that was killed (we hold the workdir lock), or planted by the `user` who owns
                # .dewy/: unlink, then bind, which creates a fresh socket file and never follows a symlink.
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        address, dir_fd = _short_path(path)
        old_umask = os.umask(0o177)
        try:
            self.sock.bind(address)
        finally:
            os.umask(old_umask)
            if dir_fd is not None:
                os.close(dir_fd)
        # No chmod by path: the umask made it 0600, and in a .dewy/ that belongs to the `user` a chmod could be
        # sent through a symlink planted meanwhile.
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.inode = _inode(path)  # to notice the file deleted or replaced (present(): HUP binds afresh)

    def present(self) -> bool:
        """Whether the socket file clients connect to is still the one this server bound."""
        return self.inode is not None and _inode(self.path) == self.inode

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> list:
        """The connections waiting (ControlConnection each), from dewy's user or root only."""
        conns = []
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return conns
            except OSError:
                return conns
            sock.setblocking(False)
            conns.append(ControlConnection(sock))

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class ControlConnection:
    """One client: its request line as it arrives, then the answer."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""
        self.deadline: float | None = None
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))
        self.peer_pid, self.peer_uid = pid, uid

    def fileno(self) -> int:
        return self.sock.fileno()

    def allowed(self) -> bool:
        """Only dewy's own user (or root) may command it."""
        return self.peer_uid in (os.getuid(), 0)

    def read(self):
        """The request once its line is complete: a dict, or a str saying what is wrong; None while incomplete."""
        try:
            chunk = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            return "cannot read the request: %s" % exc
        self.buffer += chunk
        if b"\n" not in self.buffer:
            if not chunk:
                return "the request ended without a newline"
            if len(self.buffer) > MAX_REQUEST:
                return "the request is longer than %d bytes" % MAX_REQUEST
            return None
        line = self.buffer.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
        except ValueError:
            return "the request is not JSON"
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return 'the request must be a JSON object with a "command"'
        if not isinstance(request.get("args", {}), dict):
            return '"args" must be a JSON object'
        return request

    def answer(self, data: dict) -> None:
        """Send the answer line (small: it fits the socket buffer) and close."""
        try:
            self.sock.send((json.dumps(data, sort_keys=True) + "\n").encode())
        except OSError:
            pass  # the client went away: nothing to tell
        self.close()

    def close(self) -> None:
        self.sock.close()


def request(path: str, command: str, args: dict | None = None, timeout: float = 10.0) -> dict:
    """Send one command to the master of the control socket at path; its answer (ControlError when none)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        address, dir_fd = _short_path(path)
    except OSError as exc:
        sock.close()
        raise ControlError("no dewy master runs there (%s: %s)" % (os.path.dirname(path), exc.strerror)) from None
    try:
        try:
            sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError("no dewy master runs there (nothing listens on %s)" % path) from None
        except OSError as exc:
            raise ControlError("cannot reach the master at %s: %s" % (path, exc.strerror or exc)) from None
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        sock.sendall((json.dumps({"v": 1, "command": command, "args": args or {}}) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        raise ControlError("the master at %s did not answer within %gs" % (path, timeout)) from None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError("the master at %s closed the connection without an answer" % path) from None
    if not isinstance(answer, dict):
        raise ControlError("the master at %s answered garbage" % path)
    return answer
