"""The master's status file, workdir/.dewy/status.json: written atomically, read by `dewy status`."""

import json
import os
import tempfile

STATUS_FILE = "status.json"


def state_dir(workdir: str) -> str:
    """The directory where dewy keeps its own state for a workdir (created on demand, mode 0700)."""
    path = os.path.join(workdir, ".dewy")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def status_path(workdir: str) -> str:
    """Where the status file of a workdir lives."""
    return os.path.join(workdir, ".dewy", STATUS_FILE)


def write_json_atomic(path: str, data) -> None:
    """Write data as JSON to path so that readers see the old or the new file, never a part."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write(workdir: str, data: dict) -> None:
    """Replace the status file of workdir with data."""
    state_dir(workdir)
    write_json_atomic(status_path(workdir), data)


def read(workdir: str) -> dict | None:
    """The status of workdir, or None when no master has written one."""
    try:
        with open(status_path(workdir)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
