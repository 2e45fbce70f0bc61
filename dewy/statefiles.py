"""The master's status file, workdir/.dewy/status.json: written atomically, read by `dewy status`."""

import itertools
import json
import logging
import os
import stat

from dewy.workdir import state_path

log = logging.getLogger("dewy")

STATUS_FILE = "status.json"


def state_dir(workdir: str) -> str:
    """The directory where dewy keeps its own state for a workdir (created on demand, mode 0700)."""
    path = state_path(workdir)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def status_path(workdir: str) -> str:
    """Where the status file of a workdir lives."""
    return state_path(workdir, STATUS_FILE)


_tmp_numbers = itertools.count()
MAX_STATE_FILE = 16 << 20  # dewy's JSON state files are kilobytes; a bigger one is not ours


def write_json_atomic(path: str, data, mode: int = 0o600, durable: bool = False) -> None:
    """Write data as JSON to path (file mode `mode`) so that readers see the old or the new file, never a part.

    durable: the data and the rename are on the disk when this returns (the file fsync'd before the rename,
    its directory after), so that what follows cannot reach the disk first (a power loss, the OOM killer).

    Safe in a directory another user may write to (.dewy/ with the `user` setting): the temporary file is
    created with O_EXCL | O_NOFOLLOW (never an existing file or a symlink's target) and renamed over path,
    which replaces whatever entry is there instead of writing through it."""
    # Named by pid and a counter instead of tempfile.mkstemp: the master then never imports tempfile
    # (random, shutil, hashlib: about 1 MiB it would keep for months).
    tmp = os.path.join(os.path.dirname(path), ".%s.%d.%d" % (os.path.basename(path), os.getpid(), next(_tmp_numbers)))
    try:
        os.unlink(tmp)  # left by a crashed process that had our pid
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not decide who may read it
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(os.path.dirname(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def fsync_dir(path: str) -> None:
    """Flush a directory's entries (a rename, a new file) to the disk."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateFileError(ValueError):
    """A state file is there but cannot be read or parsed: its str names the file and the error, in one line.

    Unreadable never means empty: each reader fails closed (the poller deploys nothing while refused.json is
    bad, `dewy rollback` refuses while the manifest is, nothing rewrites such a file and loses its entries)."""


def read_state(path: str, what: str):
    """The JSON data in path; None when the file is missing; StateFileError when it is there but unreadable.

    Never through a symlink, and never blocking on a FIFO (another user may plant either in .dewy/, see `user`).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError("cannot read the %s %s: %s" % (what, path, exc.strerror or exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_STATE_FILE:
            raise StateFileError("cannot read the %s %s: not a regular file of at most %d bytes"
                                 % (what, path, MAX_STATE_FILE))
        with os.fdopen(fd, encoding="utf-8") as fh:
            fd = None
            return json.load(fh)
    except StateFileError:
        raise
    except UnicodeDecodeError as exc:
        raise StateFileError("cannot read the %s %s: not UTF-8 (%s)" % (what, path, exc.reason)) from None
    except ValueError as exc:  # json.JSONDecodeError: "Expecting ... : line 3 column 5 (char 40)"
        raise StateFileError("cannot read the %s %s: invalid JSON: %s" % (what, path, exc)) from None
    except OSError as exc:
        raise StateFileError("cannot read the %s %s: %s" % (what, path, exc.strerror or exc)) from None
    finally:
        if fd is not None:
            os.close(fd)


def read_json(path: str, what: str):
    """The JSON data in path; None when the file is missing or unreadable (the latter logged as a warning).

    Only for a file its reader rewrites whole from what it knows (the master's status file): every other state
    file is read with read_state, and an unreadable one is an error, never "empty"."""
    try:
        return read_state(path, what)
    except StateFileError as exc:
        log.warning("%s: ignoring it, it is rewritten from what the master knows", exc)
        return None


def write(workdir: str, data: dict, durable: bool = False) -> None:
    """Replace the status file of workdir with data (durable: on the disk when this returns)."""
    state_dir(workdir)
    write_json_atomic(status_path(workdir), data, durable=durable)


def read(workdir: str) -> dict | None:
    """The status of workdir, or None when no master has written one."""
    return read_json(status_path(workdir), "status file")
