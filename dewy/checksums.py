"""Published checksums: which files next to an artifact may carry its SHA-256, and reading them.

Recognised (in order of preference): `<artifact>.sha256`, `.sha256sum`, `.sha256.txt`, `.sha256sums`,
`checksums.txt`, `*_checksums.txt` (goreleaser) and `SHA256SUMS` — each either sha256sum output
(`<hex>  <name>`) or, for the per-artifact files, a bare digest. GitHub's asset `digest` is handled by
the GitHub registry itself.
"""

import os
import re
from typing import Callable, Iterable

HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
PER_ARTIFACT_SUFFIXES = (".sha256", ".sha256sum", ".sha256.txt", ".sha256sums")
LIST_FILES = ("checksums.txt", "SHA256SUMS")
MAX_CHECKSUM_FILE = 1 << 20  # a checksum list bigger than 1 MiB is not one


class ChecksumConflict(ValueError):
    """Two published checksum files disagree about the artifact."""


def parse_sha256sums(text: str) -> dict:
    """Parse sha256sum output (`<hex>  <name>` or `<hex> *<name>` lines) into name -> lower-case hex."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not HEX64.match(parts[0]):
            continue
        name = parts[1].strip()
        if name.startswith("*"):  # binary-mode marker
            name = name[1:]
        sums[os.path.basename(name)] = parts[0].lower()
    return sums


def candidates(artifact: str, names: Iterable[str]) -> list:
    """The files among names that may publish artifact's checksum, most specific first."""
    names = list(names)
    present = set(names)
    wanted = [artifact + suffix for suffix in PER_ARTIFACT_SUFFIXES] + ["checksums.txt"]
    wanted += sorted(n for n in names if n.endswith("_checksums.txt"))
    wanted += ["SHA256SUMS"]
    return [n for n in wanted if n in present]


def looked_for(artifact: str) -> str:
    """The names searched for, in words (for "no checksum published" errors)."""
    return ", ".join([artifact + s for s in PER_ARTIFACT_SUFFIXES] + ["checksums.txt", "*_checksums.txt",
                                                                      "SHA256SUMS"])


def digest_in(text: str, artifact: str, file_name: str) -> str | None:
    """The artifact's SHA-256 in the text of checksum file file_name, or None when it is not listed."""
    sums = parse_sha256sums(text)
    if artifact in sums:
        return sums[artifact]
    bare = text.strip().split(None, 1)[0] if text.strip() else ""
    if file_name.startswith(artifact + ".") and HEX64.match(bare):
        return bare.lower()  # a bare digest, as `sha256sum | cut -d' ' -f1` writes
    return None


def find(artifact: str, names: Iterable[str], read: Callable[[str], str]) -> tuple:
    """(sha256, file it came from) of artifact from the checksum files among names, or (None, None).

    `read(name)` returns a file's text (at most MAX_CHECKSUM_FILE bytes) or raises OSError to skip it.
    Two files that disagree raise ChecksumConflict: deploying either would be a guess.
    """
    found = {}
    for name in candidates(artifact, names):
        try:
            text = read(name)
        except OSError:
            continue
        digest = digest_in(text, artifact, name)
        if digest:
            found[name] = digest
    if len(set(found.values())) > 1:
        raise ChecksumConflict("conflicting checksums for %s in %s" % (artifact, ", ".join(sorted(found))))
    if not found:
        return None, None
    name = next(iter(found))
    return found[name], name
