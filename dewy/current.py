"""The `current` symlink and the release manifest: what the master needs from dewy.releases.

Split from dewy.releases so that the master, which switches `current` and reads which version a
release holds, never imports the unpacking machinery (tarfile, zipfile, gzip, bz2, lzma, shutil).
dewy.releases re-exports everything here.
"""

from __future__ import annotations

import errno
import logging
import os

from dewy.clock import utc_iso
from dewy.statefiles import StateFileError, read_state, state_dir, write_json_atomic
from dewy.workdir import state_path

log = logging.getLogger("dewy.releases")


class ReleaseError(Exception):
    """A release could not be installed, switched to or recorded."""


# --- the current symlink -------------------------------------------------------------------------


def switch_link(link_path: str, target: str) -> None:
    """Atomically point the symlink link_path at target (a new link is created aside, then renamed over).

    The link is relative when target lies under the link's directory (``current -> releases/<ts>``),
    so the workdir can be moved or bind-mounted; absolute otherwise. Raises ReleaseError if link_path
    exists and is not a symlink: dewy never replaces a real file or directory.
    """
    link_path = os.path.abspath(link_path)
    if os.path.lexists(link_path) and not os.path.islink(link_path):
        raise ReleaseError(f"refusing to replace {link_path}: it exists and is not a symlink")
    text = _link_text(link_path, target)
    tmp = f"{link_path}.tmp-{os.getpid()}"
    try:
        if os.path.lexists(tmp):  # left over by a crashed process with our pid
            os.unlink(tmp)
        os.symlink(text, tmp)
        os.replace(tmp, link_path)  # rename(2) is atomic: readers see the old or the new link
    except OSError as exc:
        _unlink_quietly(tmp)
        raise ReleaseError(f"cannot point {link_path} at {target}: {exc}") from exc
    _fsync_dir(os.path.dirname(link_path))


def _link_text(link_path: str, target: str) -> str:
    """What to store in the link: a path relative to the link's directory when target lies under it."""
    base = os.path.dirname(link_path)
    target_abs = os.path.abspath(target)
    if _is_under(target_abs, base):
        return os.path.relpath(target_abs, base)
    # The same place may be reachable under two spellings (/tmp vs /private/tmp): compare real paths.
    real_base, real_target = os.path.realpath(base), os.path.realpath(target_abs)
    if _is_under(real_target, real_base):
        return os.path.relpath(real_target, real_base)
    return target_abs


def _is_under(path: str, directory: str) -> bool:
    """Whether path is strictly below directory (lexically)."""
    return path.startswith(directory.rstrip(os.sep) + os.sep)


def read_link(link_path: str) -> str | None:
    """The absolute real path the symlink link_path points to, or None if it is absent, dangling or not a symlink."""
    if not os.path.islink(link_path):
        return None
    real = os.path.realpath(link_path)
    return real if os.path.exists(real) else None


def _unlink_quietly(path: str) -> None:
    """Remove a file or symlink if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    """Flush a directory entry change to disk (best effort: not every file system supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):
            log.debug("fsync %s: %s", path, exc)
    finally:
        os.close(fd)


# --- manifest ------------------------------------------------------------------------------------


class Manifest:
    """``workdir/.dewy/releases.json``: which version, tag, artifact and checksum each release directory holds.

    Keys are release directory names (``20261126T065012Z``); each entry's `seq` counts up with every release
    recorded, the deploy history that orders releases (history_order), since names and times follow a wall
    clock that may step back. A missing file is an empty manifest; an unreadable or corrupt one is a
    StateFileError (naming the file and the error), never taken for empty: nothing is recorded over it (that
    would lose every entry), nothing pruned or rolled back by it.
    """

    FILE = "releases.json"

    def __init__(self, workdir: str):
        """Bind the manifest of workdir (nothing is read or created until used)."""
        self.workdir = os.path.abspath(workdir)
        self.path = state_path(self.workdir, self.FILE)

    def record(self, release_dir: str, version: str, tag: str, artifact: str, sha256: str | None) -> None:
        """Remember what release_dir (a path or a bare directory name) holds, as the newest in the history."""
        entries = self._load()
        seq = max((e["seq"] for e in entries.values() if isinstance(e.get("seq"), int)), default=0) + 1
        entries[_key(release_dir)] = {
            "version": version,
            "tag": tag,
            "artifact": artifact,
            "sha256": sha256,
            "installed_at": utc_iso(),
            "seq": seq,
        }
        self._save(entries)

    def get(self, release_dir: str) -> dict | None:
        """The entry recorded for release_dir, or None (StateFileError when the manifest cannot be read)."""
        entry = self._load().get(_key(release_dir))
        return dict(entry) if entry is not None else None

    def version_of(self, release_dir: str) -> str | None:
        """The version recorded for release_dir, or None when unknown (also, logged as an error, when the
        manifest cannot be read: the master only names the version with it)."""
        try:
            entry = self.get(release_dir)
        except StateFileError as exc:
            log.error("%s: the version of %s is unknown", exc, _key(release_dir))
            return None
        return entry.get("version") if entry else None

    def forget(self, release_dir: str) -> None:
        """Drop the entry of release_dir (e.g. after prune removed it); a no-op when there is none, or when the
        manifest cannot be read (whoever read it first said so)."""
        try:
            entries = self._load()
        except StateFileError as exc:
            log.debug("%s: cannot forget %s there", exc, _key(release_dir))  # what failed to read says it
            return
        if entries.pop(_key(release_dir), None) is not None:
            self._save(entries)

    def entries(self) -> dict:
        """All entries, release directory name -> entry (a copy: changing it changes nothing on disk)."""
        return {name: dict(entry) for name, entry in self._load().items()}

    def _load(self) -> dict:
        """Read the manifest ({} when missing); StateFileError when it is there but unusable."""
        data = read_state(self.path, "release manifest")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise StateFileError("cannot read the release manifest %s: expected a JSON object" % self.path)
        # Keep what is well-formed rather than throwing the whole history away for one bad entry.
        return {name: entry for name, entry in data.items() if isinstance(entry, dict)}

    def _save(self, entries: dict) -> None:
        """Replace the manifest atomically."""
        state_dir(self.workdir)  # creates .dewy with mode 0700
        write_json_atomic(self.path, entries)


def history_order(entries: dict):
    """A sort key for release directory names, oldest deploy first, from the manifest's entries: by `seq` (the
    order they were recorded in), not by their timestamp names (after the wall clock stepped back, a newer
    release has an older name). Names recorded before `seq` existed, or not recorded, come first, by name."""
    def order(name: str):
        seq = (entries.get(name) or {}).get("seq")
        stamp, _, n = name.partition("-")  # 20261126T065012Z, 20261126T065012Z-002
        return (1, seq, "", 0) if isinstance(seq, int) else (0, 0, stamp, int(n) if n.isdigit() else 0)
    return order


def _key(release_dir: str) -> str:
    """The manifest key of a release: its directory name."""
    return os.path.basename(os.path.normpath(release_dir))
