"""Releases on disk: safe unpacking into releases/<UTC timestamp>/, the atomic `current` switch,
pruning old releases, and the manifest that says which version each release directory holds.

Archives come from a registry, i.e. from the network: every member is checked before anything is
written, and nothing is ever written outside the release directory being built. The checks mirror
Python 3.12's tarfile ``filter='data'`` but are implemented here so that they behave identically on
every Python dewy supports (and are stricter: absolute members are refused, not re-rooted).

A release may also be too big: `max-release-size` (bytes written) and `max-release-files` (entries created)
are counted while unpacking, from what is actually written, not from what headers claim, so a
decompression bomb stops at the limit and the disk never holds more than it.
"""

from __future__ import annotations

import bz2
import contextlib
import datetime
import errno
import gzip
import logging
import lzma
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterable

from dewy import versions
from dewy.values import format_size
# The `current` symlink, the manifest and ReleaseError live in dewy.current (the master needs them without
# tarfile and zipfile); they are re-exported here for the poller and the tests.
from dewy.current import Manifest, ReleaseError, _unlink_quietly, history_order, read_link, switch_link  # noqa: F401

log = logging.getLogger(__name__)

__all__ = [
    "ReleaseError",
    "UnsafeArchive",
    "Truncated",
    "TooLarge",
    "ARCHIVE_SUFFIXES",
    "archive_kind",
    "install",
    "switch_link",
    "read_link",
    "prune",
    "history_order",
    "Manifest",
]

# File name suffix -> archive kind (declared in dewy.versions, which also ranks artifact names by it);
# anything else is installed as a bare executable file.
ARCHIVE_SUFFIXES = versions.ARCHIVE_SUFFIXES

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
TMP_SUFFIX = ".tmp"
STALE_TMP_SECONDS = 3600

# A release directory name: the UTC timestamp, plus "-N" when several releases land in one second.
_RELEASE_NAME = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")

_COPY_BUFFER = 1024 * 1024
_MAX_ZIP_SYMLINK_TARGET = 4096  # a zip symlink's target is its content; anything longer is bogus
# tarfile holds a member's header (pax records, GNU long names) in memory, and what follows the end of
# the archive is only record padding: real ones are a few KiB, so more than this is a bomb, not a release.
_MAX_TAR_OVERHEAD = 16 * 1024 * 1024

# Exceptions the decompressors and archive readers raise on damaged input.
_CORRUPT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError)


class Truncated(ReleaseError):
    """The archive ends before its end (a cut-off stream, no end-of-archive marker, a zip without its central
    directory): a corrupt release, or one still being copied into the registry (the poller asks which)."""


class UnsafeArchive(ReleaseError):
    """An archive member would escape the release directory or is not a plain file, directory or link."""


class TooLarge(UnsafeArchive):
    """The release unpacks to more than max-release-size bytes or max-release-files entries (a bad release)."""


class _Budget:
    """What a release may still take on disk: bytes written and entries created, each checked before it happens.

    None for a limit means no limit. Counting happens where the bytes are written, so headers that
    understate sizes (a lying zip, a sparse tar member) cannot get past it.
    """

    def __init__(self, artifact_name: str, max_size: int | None, max_files: int | None):
        self.artifact_name = artifact_name
        self.max_size = max_size
        self.max_files = max_files
        self.size = 0
        self.files = 0

    def too_big(self) -> TooLarge:
        """The refusal for a release past max-release-size."""
        return TooLarge(f"release {self.artifact_name} unpacks to more than {format_size(self.max_size)} "
                        "(max-release-size)")

    def too_many(self) -> TooLarge:
        """The refusal for a release past max-release-files."""
        return TooLarge(f"release {self.artifact_name} unpacks to more than {self.max_files} files, directories "
                        "and links (max-release-files)")

    def take_bytes(self, count: int) -> None:
        """Account for count more bytes about to be written; TooLarge (nothing written) past the limit."""
        if self.max_size is not None and self.size + count > self.max_size:
            raise self.too_big()
        self.size += count

    def take_entry(self) -> None:
        """Account for one more entry (file, directory, link) about to be created; TooLarge past the limit."""
        if self.max_files is not None and self.files + 1 > self.max_files:
            raise self.too_many()
        self.files += 1


# --- archive kinds -------------------------------------------------------------------------------


def archive_kind(name: str) -> str:
    """The kind of artifact a file name denotes: tar.gz, tgz, tar.bz2, tbz2, tar.xz, txz, tar, zip, or file."""
    lowered = name.lower()
    # Longest suffix first, so "x.tar.gz" is a tar.gz and not a "tar" or "file".
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return ARCHIVE_SUFFIXES[suffix]
    return "file"


# --- install -------------------------------------------------------------------------------------


def install(artifact_path: str, artifact_name: str, releases_dir: str,
            max_size: int | None = None, max_files: int | None = None) -> str:
    """Unpack the artifact at artifact_path into a new ``releases_dir/<UTC timestamp>/`` and return its absolute path.

    The artifact is unpacked into ``<timestamp>.tmp/`` and renamed only once complete, so a release
    directory is never seen half-written. max_size (bytes) and max_files (entries) bound what is
    written (the poller passes `max-release-size` / `max-release-files`; None: no limit). Raises
    UnsafeArchive for a member that would escape the release directory (or is a device/fifo),
    TooLarge (an UnsafeArchive) at a limit, ReleaseError for a corrupt archive or an I/O failure (its
    __cause__ then an OSError with an errno); in every failure case the .tmp directory is removed and
    nothing else was touched.
    """
    releases_dir = os.path.abspath(releases_dir)
    try:
        os.makedirs(releases_dir, exist_ok=True)
        final, tmp = _reserve_release_dir(releases_dir)
    except OSError as exc:
        raise ReleaseError(f"cannot create a release directory in {releases_dir}: {exc}") from exc
    try:
        _unpack(artifact_path, artifact_name, tmp, _Budget(artifact_name, max_size, max_files))
        _check_links(tmp, artifact_name)
        _publish(tmp, final)
    except BaseException:
        _rmtree(tmp)
        raise
    return final


def _publish(tmp: str, final: str) -> None:
    """Give the finished release its final name (and readable mode) in one atomic rename."""
    try:
        # Private while being filled; readable afterwards (a web server may serve an assets release).
        os.chmod(tmp, 0o755)
        if os.path.lexists(final):  # someone took the name meanwhile: never merge into it
            raise ReleaseError(f"release directory {final} appeared while unpacking")
        os.rename(tmp, final)
    except OSError as exc:
        raise ReleaseError(f"cannot rename {tmp} to {final}: {exc}") from exc


def _listdir(path: str) -> list:
    """The names in path ([] when it cannot be listed)."""
    try:
        return os.listdir(path)
    except OSError:
        return []


def _reserve_release_dir(releases_dir: str) -> tuple[str, str]:
    """Create a fresh ``<ts>[-N].tmp`` directory whose final name is free too; return (final, tmp)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(TIMESTAMP_FORMAT)
    # Release dirs sort by name (prune, rollback): a second one within the same second must sort after every
    # name of that second still there — never take a name prune just freed — so counters only go up, and are
    # zero-padded (`-010` after `-009`).
    taken = [name[len(stamp):].removesuffix(TMP_SUFFIX) for name in _listdir(releases_dir) if name.startswith(stamp)]
    counters = [1 if not rest else int(rest[1:]) for rest in taken if not rest or re.fullmatch(r"-\d+", rest)]
    counter = max(counters, default=0) + 1
    while True:
        name = stamp if counter == 1 else f"{stamp}-{counter:03d}"
        final = os.path.join(releases_dir, name)
        tmp = final + TMP_SUFFIX
        if not os.path.lexists(final):
            try:
                # mkdir is atomic: it both checks and claims the name.
                os.mkdir(tmp, 0o700)
                return final, tmp
            except FileExistsError:
                pass
        counter += 1


def _cut_short(exc: Exception, artifact_path: str) -> bool:
    """Whether an unpacking error says the archive simply ends too early (what a copy still under way looks like),
    not that its bytes are wrong: a compressed stream or tar data that ends, a zip that starts like one but has no
    central directory at its end."""
    if isinstance(exc, EOFError) or "unexpected end of data" in str(exc):
        return True
    if isinstance(exc, zipfile.BadZipFile) and "not a zip file" in str(exc):
        try:
            with open(artifact_path, "rb") as fh:
                return fh.read(4) == b"PK\x03\x04"
        except OSError:
            return False
    return False


def _unpack(artifact_path: str, artifact_name: str, dest: str, budget: _Budget) -> None:
    """Unpack (or copy, for a bare file) the artifact into the empty directory dest, within budget."""
    kind = archive_kind(artifact_name)
    try:
        if kind == "file":
            _install_file(artifact_path, artifact_name, dest, budget)
        elif kind == "zip":
            _ZipUnpacker(artifact_name, dest, budget).run(artifact_path)
        else:
            _TarUnpacker(artifact_name, dest, budget).run(artifact_path)
    except ReleaseError:
        raise
    except _CORRUPT_ERRORS as exc:
        error = Truncated if _cut_short(exc, artifact_path) else ReleaseError
        raise error(f"corrupt archive {artifact_name}: {exc}") from exc
    except OSError as exc:
        # bz2 reports damaged data as a bare OSError without an errno; a real I/O error has one.
        if exc.errno is None:
            raise ReleaseError(f"corrupt archive {artifact_name}: {exc}") from exc
        what = _member_error(exc, dest)  # without the per-attempt <ts>.tmp path: repeats compare equal
        if exc.errno in _MALFORMED_ERRNOS:
            # The archive's own doing (`a` then `a/b`, a symlink loop, a name over 255 bytes): refuse the
            # release (no errno'd cause: not the host's fault), never unpack it again at every poll.
            raise ReleaseError(f"malformed archive {artifact_name}: {what}") from None
        raise ReleaseError(f"cannot unpack {artifact_name}: {what}") from exc
    except ValueError as exc:  # e.g. a NUL byte in a member name
        raise ReleaseError(f"corrupt archive {artifact_name}: {exc}") from exc
    except (NotImplementedError, RuntimeError) as exc:  # zip: unknown compression method, encryption
        raise ReleaseError(f"unsupported archive {artifact_name}: {exc}") from exc


# errnos unpacking raises because of what the archive holds, never because of the host.
_MALFORMED_ERRNOS = frozenset({errno.EEXIST, errno.ELOOP, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR})


def _member_error(exc: OSError, dest: str) -> str:
    """An unpacking OSError in one line naming the member relative to the release (not the temp dir)."""
    name = exc.filename
    if isinstance(name, str) and (name == dest or name.startswith(dest + os.sep)):
        name = os.path.relpath(name, dest)
    text = exc.strerror or str(exc)
    if isinstance(name, str):
        shown = name if len(name) <= 120 else name[:117] + "..."
        text += f": {shown!r}"
    return text


def _install_file(artifact_path: str, artifact_name: str, dest: str, budget: _Budget) -> None:
    """Install a non-archive artifact as an executable file named like the artifact."""
    name = os.path.basename(artifact_name)
    if name in ("", ".", "..") or name != artifact_name:
        raise ReleaseError(f"artifact name {artifact_name!r} is not a plain file name")
    target = os.path.join(dest, name)
    budget.take_entry()
    with open(artifact_path, "rb") as src:
        _write_new_file(target, src, budget)
    os.chmod(target, 0o755)


def _write_new_file(path: str, src, budget: _Budget) -> None:
    """Stream src into a new file at path, never following a symlink that might sit there; every chunk
    is taken from budget before it is written, so a limit stops the copy with nothing past it on disk."""
    # O_EXCL|O_NOFOLLOW: the caller removed any previous entry, so this can only create a fresh file
    # in a directory already proven to be inside the release.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = src.read(_COPY_BUFFER)
            if not chunk:
                break
            budget.take_bytes(len(chunk))
            out.write(chunk)


def _file_mode(mode: int) -> int:
    """The mode an unpacked file gets: permission bits only (no setuid/setgid/sticky), no group/other
    write, always owner read/write; executable bits are kept."""
    return (mode & 0o755) | 0o600


def _dir_mode(mode: int) -> int:
    """The mode an unpacked directory gets: like files, plus owner rwx so dewy can fill and prune it."""
    return (mode & 0o755) | 0o700


class _Unpacker:
    """Shared member checks and writers for tar and zip; subclasses feed members in archive order.

    Each member is validated against the directory as it stands when the member arrives (so a member
    written "through" an earlier symlink is caught by resolving real paths), then written without
    ever following a symlink at the final path component.
    """

    def __init__(self, artifact_name: str, dest: str, budget: _Budget):
        self.artifact_name = artifact_name
        self.dest = dest
        self.root = os.path.realpath(dest)
        self.budget = budget

    # -- checks --

    def refuse(self, member: str, why: str) -> None:
        """Raise UnsafeArchive naming the member and the reason."""
        raise UnsafeArchive(f"unsafe archive {self.artifact_name}: member {member!r} {why}")

    def member_path(self, name: str) -> str | None:
        """The normalised relative path of a member, None for the archive root ("./"); refuses escapes."""
        if not name:
            self.refuse(name, "has an empty name")
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or name.startswith("\\"):
            self.refuse(name, "has an absolute path")
        rel = os.path.normpath(name)
        if rel == ".":
            return None
        if rel == ".." or rel.startswith("../"):
            self.refuse(name, "escapes the release directory with '..'")
        return rel

    def inside(self, path: str) -> bool:
        """Whether a path, with every existing symlink resolved, lies within the release directory."""
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def check_link_target(self, name: str, rel: str, target: str) -> None:
        """Refuse a symlink at rel whose target is absolute or resolves outside the release directory."""
        if not target:
            self.refuse(name, "is a symlink with an empty target")
        if target.startswith("/"):
            self.refuse(name, f"is a symlink to the absolute path {target!r}")
        # Lexically first (independent of what exists now), then through the real file system.
        lexical = os.path.normpath(os.path.join(os.path.dirname(rel), target))
        if lexical == ".." or lexical.startswith("../"):
            self.refuse(name, f"is a symlink to {target!r}, outside the release directory")
        if not self.inside(os.path.join(self.dest, os.path.dirname(rel), target)):
            self.refuse(name, f"is a symlink to {target!r}, which resolves outside the release directory")

    # -- writers --

    def prepare(self, name: str, rel: str) -> str:
        """Create the parent directories of rel inside the release, check they resolve inside, and
        clear whatever non-directory entry is at rel; return the absolute destination path."""
        path = os.path.join(self.dest, rel)
        parent = os.path.dirname(path)
        if not self.inside(parent):
            self.refuse(name, "would be written through a symlink that leads outside the release directory")
        os.makedirs(parent, mode=0o755, exist_ok=True)
        if not self.inside(parent):  # makedirs may have walked through links created meanwhile
            self.refuse(name, "would be written through a symlink that leads outside the release directory")
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
            # A later member replaces an earlier one (tar semantics); removing first means we never
            # write through a symlink an earlier member left here.
            os.unlink(path)
        return path

    def make_dir(self, name: str, rel: str, mode: int) -> None:
        """Create (or re-mode) a directory member."""
        path = self.prepare(name, rel)
        if not os.path.isdir(path) or os.path.islink(path):
            os.mkdir(path, 0o700)
        os.chmod(path, _dir_mode(mode))

    def make_file(self, name: str, rel: str, src, mode: int, mtime: float | None) -> None:
        """Stream a regular file member into place and set its sanitised mode."""
        path = self.prepare(name, rel)
        if os.path.isdir(path):
            raise ReleaseError(f"archive {self.artifact_name}: file member {name!r} collides with a directory")
        _write_new_file(path, src, self.budget)
        os.chmod(path, _file_mode(mode))
        if mtime is not None:
            _set_mtime(path, mtime)

    def make_symlink(self, name: str, rel: str, target: str) -> None:
        """Create a symlink member after checking its target stays inside the release."""
        self.check_link_target(name, rel, target)
        path = self.prepare(name, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            raise ReleaseError(f"archive {self.artifact_name}: symlink member {name!r} collides with a directory")
        os.symlink(target, path)

    def make_hardlink(self, name: str, rel: str, target: str) -> None:
        """Create a hard link member to an earlier member (tar link names are relative to the archive root)."""
        if target.startswith("/"):
            self.refuse(name, f"is a hard link to the absolute path {target!r}")
        target_rel = os.path.normpath(target)
        if target_rel == ".." or target_rel.startswith("../"):
            self.refuse(name, f"is a hard link to {target!r}, outside the release directory")
        source = os.path.join(self.dest, target_rel)
        if not self.inside(source):
            self.refuse(name, f"is a hard link to {target!r}, which resolves outside the release directory")
        source = os.path.realpath(source)
        if not os.path.isfile(source):
            raise ReleaseError(f"archive {self.artifact_name}: hard link {name!r} points to missing member {target!r}")
        path = self.prepare(name, rel)
        if os.path.isdir(path):
            raise ReleaseError(f"archive {self.artifact_name}: hard link {name!r} collides with a directory")
        os.link(source, path, follow_symlinks=False)


class _TarUnpacker(_Unpacker):
    """Unpacks tar archives (gzip, bzip2, xz or none) strictly sequentially, one member at a time."""

    def run(self, artifact_path: str) -> None:
        """Validate and extract every member of the tarball at artifact_path, then prove it was complete."""
        with open(artifact_path, "rb") as raw, _decompressor(raw) as plain:
            reader = _TailReader(plain, self.artifact_name)
            # Stream mode ("r|") reads forward only, so memory use stays constant whatever the size;
            # the reads between members (headers, which tarfile keeps in memory) are bounded.
            reader.bound("a member header")
            with tarfile.open(fileobj=reader, mode="r|") as archive:
                for member in archive:
                    # Counted on arrival: tarfile keeps every member it read in a list, so this bounds memory too.
                    self.budget.take_entry()
                    reader.bound(None)
                    self.extract(archive, member)
                    reader.bound("a member header")
                end = archive.offset
            self.check_complete(reader, end)
            # Read to the end so the decompressor verifies its checksum and notices a cut-off stream;
            # bounded, so a bomb hidden after the end-of-archive marker does not keep us decompressing.
            reader.bound("the data after the end-of-archive marker")
            while reader.read(_COPY_BUFFER):
                pass

    def check_complete(self, reader: "_TailReader", end: int) -> None:
        """Refuse a tarball that stopped without the end-of-archive marker (truncated or damaged).

        tarfile silently treats a cut-off or garbled header after the first member as the end of the
        archive; a complete tarball always has a zero block there.
        """
        block = reader.bytes_at(end, tarfile.BLOCKSIZE)
        if block is None or len(block) != tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
            raise (Truncated if block is None or len(block) != tarfile.BLOCKSIZE else ReleaseError)(
                f"corrupt archive {self.artifact_name}: truncated or damaged at byte {end} "
                "(no end-of-archive marker)"
            )

    def extract(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Check one tar member and write it."""
        name = member.name
        rel = self.member_path(name)
        if member.isdev() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            self.refuse(name, "is a device, fifo or other special file")
        if rel is None:
            if not member.isdir():
                self.refuse(name, "replaces the release directory itself")
            return  # "./": the release directory already exists with dewy's own mode
        if member.isdir():
            self.make_dir(name, rel, member.mode)
        elif member.issym():
            self.make_symlink(name, rel, member.linkname)
        elif member.islnk():
            self.make_hardlink(name, rel, member.linkname)
        else:
            source = archive.extractfile(member)
            self.make_file(name, rel, source, member.mode, member.mtime)


def _decompressor(raw):
    """A file object yielding the uncompressed tar stream of raw, chosen by its magic bytes.

    Sniffing instead of trusting the suffix lets a mislabelled artifact (a gzipped ".tar") unpack.
    The standard decompressors raise EOFError on a cut-off stream, which is reported as corrupt.
    """
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")
    return contextlib.nullcontext(raw)


class _TailReader:
    """Passes reads through while remembering the last bytes read, so the end of a tar can be inspected,
    and refusing to read more than _MAX_TAR_OVERHEAD bytes of whatever it was told it is reading now."""

    WINDOW = 64 * 1024  # far more than tarfile's read-ahead (one 10 KiB record)

    def __init__(self, fileobj, artifact_name: str):
        self.fileobj = fileobj
        self.artifact_name = artifact_name
        self.total = 0
        self.window = bytearray()
        self.bounded = None  # (what, stream offset where it began) while reads are bounded

    def bound(self, what: str | None) -> None:
        """From here on the reads are `what` and may not exceed _MAX_TAR_OVERHEAD bytes (None: unbounded)."""
        self.bounded = (what, self.total) if what else None

    def read(self, size: int = -1) -> bytes:
        """Read like the wrapped file object, recording the data."""
        if self.bounded is not None:
            what, since = self.bounded
            if self.total - since > _MAX_TAR_OVERHEAD:
                raise ReleaseError(f"corrupt archive {self.artifact_name}: {what} is larger than "
                                   f"{format_size(_MAX_TAR_OVERHEAD)}")
            if size is None or size < 0:
                size = _COPY_BUFFER  # never slurp the rest of a stream in one read
        data = self.fileobj.read(size)
        self.total += len(data)
        self.window += data
        if len(self.window) > self.WINDOW:
            del self.window[: len(self.window) - self.WINDOW]
        return data

    def bytes_at(self, offset: int, length: int) -> bytes | None:
        """Up to length bytes read from stream position offset, or None if they left the window."""
        start = self.total - len(self.window)
        if offset < start:
            return None
        return bytes(self.window[offset - start : offset - start + length])


class _ZipUnpacker(_Unpacker):
    """Unpacks zip archives, restoring unix modes and symlinks from each entry's external_attr."""

    def run(self, artifact_path: str) -> None:
        """Validate and extract every entry of the zip file at artifact_path."""
        budget = self.budget
        # zipfile reads the whole central directory into memory: check the count it announces first.
        announced = _zip_entry_count(artifact_path)
        if budget.max_files is not None and announced is not None and announced > budget.max_files:
            raise budget.too_many()
        with zipfile.ZipFile(artifact_path) as archive:
            entries = archive.infolist()
            if budget.max_files is not None and len(entries) > budget.max_files:
                raise budget.too_many()
            # What the entries claim is enough to refuse before writing anything; what they write is
            # counted anyway (zipfile stops an entry at its claimed size, the budget at the limit).
            if budget.max_size is not None and sum(info.file_size for info in entries) > budget.max_size:
                raise budget.too_big()
            for info in entries:
                budget.take_entry()
                self.extract(archive, info)

    def extract(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        """Check one zip entry and write it."""
        name = info.filename
        rel = self.member_path(name)
        unix_mode = info.external_attr >> 16  # the high 16 bits hold st_mode when made on unix
        kind = stat.S_IFMT(unix_mode)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
            self.refuse(name, "is a device, fifo or other special file")
        if rel is None:
            return
        if info.is_dir() or kind == stat.S_IFDIR:
            self.make_dir(name, rel, unix_mode or 0o755)
        elif kind == stat.S_IFLNK:
            self.make_symlink(name, rel, self.link_target(archive, info))
        else:
            with archive.open(info) as source:
                # No mode at all (archives made on Windows/DOS): a plain non-executable file.
                self.make_file(name, rel, source, unix_mode or 0o644, _zip_mtime(info))

    def link_target(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
        """A zip symlink's target, stored as the entry's content."""
        if info.file_size > _MAX_ZIP_SYMLINK_TARGET:
            self.refuse(info.filename, "is a symlink with an oversized target")
        with archive.open(info) as source:
            data = source.read(_MAX_ZIP_SYMLINK_TARGET + 1)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.refuse(info.filename, "is a symlink whose target is not UTF-8")
            raise  # unreachable: refuse() raises


def _zip_entry_count(path: str) -> int | None:
    """The number of entries a zip's end-of-central-directory record announces (zip64 too), None when it has
    none (zipfile then says what is wrong with the file)."""
    eocd, locator, zip64_eocd = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        back = min(size, 22 + 0xFFFF + 20)  # the record, its longest comment, the zip64 locator before it
        fh.seek(size - back)
        tail = fh.read(back)
        at = tail.rfind(eocd)
        if at < 0 or len(tail) - at < 22:
            return None
        count = int.from_bytes(tail[at + 10: at + 12], "little")
        if count != 0xFFFF or at < 20 or tail[at - 20: at - 16] != locator:
            return count
        fh.seek(int.from_bytes(tail[at - 12: at - 4], "little"))  # where the zip64 record is
        record = fh.read(56)
    if len(record) < 40 or record[:4] != zip64_eocd:
        return None
    return int.from_bytes(record[32:40], "little")


def _set_mtime(path: str, mtime: float) -> None:
    """Keep a member's modification time (static assets use it for Last-Modified); absurd values are skipped."""
    try:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    except (OverflowError, ValueError, OSError) as exc:
        log.debug("cannot set the mtime of %s to %r: %s", path, mtime, exc)


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    """The modification time of a zip entry (stored as local time), or None when it is nonsense."""
    try:
        return time.mktime(info.date_time + (0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _check_links(root: str, artifact_name: str) -> None:
    """Refuse the release if any symlink in it, resolved in the finished tree, leads outside it.

    Every link was checked when written, but a later member can change what an earlier link resolves
    to (``a -> x/..`` written before ``x -> .``); this final pass closes that ordering trick.
    """
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            path = os.path.join(dirpath, entry)
            if not os.path.islink(path):
                continue
            real = os.path.realpath(path)
            if real != real_root and not real.startswith(real_root + os.sep):
                rel = os.path.relpath(path, root)
                raise UnsafeArchive(
                    f"unsafe archive {artifact_name}: member {rel!r} is a symlink that resolves outside "
                    f"the release directory once unpacked"
                )


# --- prune ---------------------------------------------------------------------------------------


def prune(releases_dir: str, keep: int, protect: Iterable[str], order=None) -> list[str]:
    """Delete release directories older than the newest ``keep``, except protected ones; return what was removed.

    Release directories sort by ``order`` (a key function: the poller gives history_order, the deploy history
    of the manifest, which a wall clock stepping back does not upset), by name (their UTC timestamp) without it.
    Anything in ``protect`` (the releases `current` and the previous one point at) is never deleted, compared
    by real path, so those two are kept even beyond ``keep``. Leftover
    ``*.tmp`` directories from an interrupted unpack are removed once older than an hour. Entries
    whose names are not dewy release names are left alone.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, not {keep}")
    releases_dir = os.path.abspath(releases_dir)
    protected = {os.path.realpath(path) for path in protect if path}
    releases, stale_tmps = _scan_releases(releases_dir)
    releases.sort(key=order or _release_sort_key)
    doomed = releases[: max(0, len(releases) - keep)]
    removed = []
    for name in doomed + stale_tmps:
        path = os.path.join(releases_dir, name)
        if os.path.realpath(path) in protected:
            continue
        if _rmtree(path):
            removed.append(path)
    return removed


def _scan_releases(releases_dir: str) -> tuple[list[str], list[str]]:
    """The release directory names in releases_dir and the names of stale .tmp directories."""
    releases, stale = [], []
    try:
        entries = list(os.scandir(releases_dir))
    except FileNotFoundError:
        return releases, stale
    cutoff = time.time() - STALE_TMP_SECONDS
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        if _RELEASE_NAME.match(entry.name):
            releases.append(entry.name)
        elif entry.name.endswith(TMP_SUFFIX) and _RELEASE_NAME.match(entry.name[: -len(TMP_SUFFIX)]):
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                stale.append(entry.name)
    return releases, stale


def _release_sort_key(name: str) -> tuple[str, int]:
    """Oldest first: by timestamp, then by collision counter numerically (so -10 sorts after -9)."""
    match = _RELEASE_NAME.match(name)
    return match.group(1), int(match.group(2) or 1)


def _rmtree(path: str) -> bool:
    """Remove a directory tree, making read-only directories writable if needed; True when gone."""

    def retry_writable(func, failed_path, _error):
        """shutil.rmtree error handler: make the parent writable and retry once."""
        # An archive may have left a directory without owner write permission: grant it and retry.
        try:
            os.chmod(os.path.dirname(failed_path), 0o700)
            func(failed_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", failed_path, exc)

    if not os.path.lexists(path):
        return True
    if os.path.islink(path) or not os.path.isdir(path):
        _unlink_quietly(path)
    else:
        # Python 3.12 renamed the hook (onerror is deprecated there); the handler fits both.
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry_writable)
        else:
            shutil.rmtree(path, onerror=retry_writable)
    return not os.path.lexists(path)
