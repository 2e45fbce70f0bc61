"""`dewy pause`: workdir/.dewy/paused.json, present while new versions must not be deployed.

Written and removed by the master (its `pause` / `resume` commands), read by the poller before every
deploy and by the master at start-up, so a pause survives a restart of either. `dewy rollback` writes a
hold (`newer_than`: the version rolled back from): only a newer version deploys, and its deploy ends it. Standard library only:
the lean master imports it.
"""

import logging
import os

from dewy.clock import utc_iso
from dewy.statefiles import StateFileError, read_state, state_dir, write_json_atomic
from dewy.workdir import state_path

PAUSE_FILE = "paused.json"


def pause_path(workdir: str) -> str:
    """Where the pause of a workdir is recorded."""
    return state_path(workdir, PAUSE_FILE)


def read(workdir: str) -> dict | None:
    """{reason, since[, newer_than]} while deploys are paused, else None. An unreadable file counts as paused
    (fail closed): said once per problem (an error naming the file and what holds), not at every poll."""
    path = pause_path(workdir)
    try:
        data = read_state(path, "pause file")
    except StateFileError as exc:
        _warn_once("%s: holding every deploy until it is fixed or removed (`dewy resume` removes it)" % exc,
                   logging.ERROR)
        return {"reason": "unreadable %s" % path, "since": None}
    if data is not None and not isinstance(data, dict):
        _warn_once("the pause file %s holds no JSON object: holding every deploy until it is fixed or removed "
                   "(`dewy resume` removes it)" % path, logging.ERROR)
        return {"reason": None, "since": None}
    return data


def write(workdir: str, reason: str | None, newer_than: str | None = None, since: str | None = None,
          also_newer_than=()) -> dict:
    """Pause deploys of workdir (atomically); the record written. newer_than (a hold after `dewy rollback`):
    only versions newer than it (and than every one of also_newer_than) may deploy. since: when the pause
    began (default: now; a pause repeated keeps its first time)."""
    state_dir(workdir)
    data = {"reason": reason or None, "since": since or utc_iso()}
    if newer_than:
        data["newer_than"] = newer_than
        also = sorted({v for v in also_newer_than if v and v != newer_than})
        if also:
            data["also_newer_than"] = also
    # 0644: the poller reads it before each deploy, and with the `user` setting the poller is not root.
    write_json_atomic(pause_path(workdir), data, mode=0o644)
    return data


def holds(paused: dict | None, version: str, calver: str | None = None) -> bool:
    """Whether a pause (read()) keeps version from being deployed: always, or, for a rollback hold, unless
    version is newer than the version rolled back from and every `also_newer_than`, compared in the registry's
    scheme (calver: its `calver=` format; None: semver). A version the scheme cannot compare with a held one (the
    registry's scheme changed since the hold) is held only when it is one of the held versions, with a warning
    once: a hold must never keep every new version out for ever without a word."""
    if not paused:
        return False
    newer_than = paused.get("newer_than")
    if not newer_than:
        return True
    also = paused.get("also_newer_than")
    held = [newer_than, *(also if isinstance(also, list) else ())]
    try:
        from dewy.versions import is_older, normalise_or_none
        if normalise_or_none(version, calver) is not None and \
                all(normalise_or_none(v, calver) is not None for v in held if isinstance(v, str)):
            return not all(isinstance(v, str) and is_older(v, version, calver) for v in held)
    except (TypeError, ValueError):
        pass
    _warn_once("cannot compare version %s with the rollback's hold (newer than %s) as %s versions; only the "
               "held versions are kept back" % (version, ", ".join(map(str, held)),
                                                "calendar (%s)" % calver if calver else "semantic"))
    return version in held


_warned = set()


def _warn_once(message: str, level: int = logging.WARNING) -> None:
    """Log message (a warning by default) the first time only (read() and holds() run at every poll)."""
    if message not in _warned:
        _warned.add(message)
        logging.getLogger("dewy.pause").log(level, "%s", message)


def refuses_left(from_version: str | None, to_version: str | None, calver: str | None = None) -> bool:
    """After `dewy rollback` from from_version to to_version: whether from_version is refused. Going back, it is
    (the operator left it for a reason); going forward to a newer version (`--to`, undoing a rollback), the older
    version left did nothing wrong and is not. Compared in the registry's scheme (calver: its format, else
    semver); versions it cannot compare count as going back. For the poller and the `dewy rollback` command."""
    if not from_version or not to_version:
        return bool(from_version)
    from dewy.versions import is_older
    try:
        return not is_older(from_version, to_version, calver)
    except ValueError:
        return True


def clear(workdir: str) -> bool:
    """Resume deploys; False when they were not paused."""
    try:
        os.unlink(pause_path(workdir))
        return True
    except FileNotFoundError:
        return False
