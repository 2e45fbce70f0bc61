"""Semantic versions of releases: parsing tags, picking the newest, and matching artifacts to this host.

A registry publishes releases under tags such as ``v1.2.3``, ``1.2.3-rc.1`` or ``v1.2.3+blue``.
Only strict semver tags count (an optional ``v``/``V`` prefix is allowed, as in Dewy); the build
metadata (``+blue``) is the *slot*, used for blue/green fleets that follow different release lines.
"""

from __future__ import annotations

import fnmatch
import platform
from collections.abc import Iterable, Sequence

import semver

__all__ = [
    "parse",
    "normalise",
    "select_newest",
    "platform_aliases",
    "match_artifact",
    "is_artifact_name",
]

# OS and architecture names as they appear in artifact file names (GoReleaser and friends),
# keyed by what platform.system() / platform.machine() report (lowercased).
_OS_ALIASES = {
    "linux": ("linux",),
    "darwin": ("darwin", "macos"),
    "windows": ("windows",),
}
_ARCH_ALIASES = {
    "x86_64": ("amd64", "x86_64"),
    "amd64": ("amd64", "x86_64"),
    "aarch64": ("arm64", "aarch64"),
    "arm64": ("arm64", "aarch64"),
    "i386": ("386", "i386", "i686"),
    "i686": ("386", "i386", "i686"),
    "armv7l": ("armv7", "arm"),
}

# Files published next to artifacts that are never artifacts themselves (checksums, signatures,
# and the audit records dewy itself writes into the registry). Matched case-insensitively.
_NOT_ARTIFACT_PATTERNS = (
    "*.sha256",
    "*checksums.txt",
    "sha256sums",
    "*.sig",
    "*.asc",
    "shipped_to_*.txt",
)


def parse(tag: str) -> semver.Version | None:
    """Parse a tag (``1.2.3``, ``v1.2.3``, ``V1.2.3-rc.1+blue``) into a Version; None if not strict semver."""
    if not isinstance(tag, str):
        return None
    text = _strip_prefix(tag)
    try:
        # semver 3 parses strictly by default: exactly MAJOR.MINOR.PATCH, no leading zeros.
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        return None


def normalise(tag: str) -> str:
    """The version text of a tag without its ``v`` prefix (``v1.2.3+blue`` -> ``1.2.3+blue``).

    Raises ValueError when the tag is not strict semver, so a caller never stores a bogus version.
    """
    version = parse(tag)
    if version is None:
        raise ValueError(f"not a semantic version: {tag!r}")
    return str(version)


def select_newest(
    tags: Iterable[str],
    pre_release: bool = False,
    slot: str = "",
    exclude: Iterable[str] = (),
) -> str | None:
    """Return the tag (exactly as given) of the newest deployable version among tags, or None.

    - tags that are not semver are ignored;
    - pre-releases are considered only when ``pre_release`` is true;
    - with ``slot`` set only versions whose build metadata equals it count; with no slot, every version
      counts, build metadata does not order them, and on a tie the tag without build metadata wins,
      then the lexically smallest tag (so the choice is deterministic);
    - ``exclude`` holds normalised versions (``1.2.3+blue``) that must not be chosen (e.g. refused ones).
    """
    excluded = _normalised_set(exclude)
    best_key = None
    best_tag = None
    # Visit tags in lexical order and replace the best only on a strictly greater key, so that on a
    # tie the lexically smallest tag wins: the choice never depends on the registry's listing order.
    for tag in sorted(t for t in tags if isinstance(t, str)):
        version = parse(tag)
        if version is None or not _eligible(version, pre_release, slot, excluded):
            continue
        key = _order_key(version)
        if best_key is None or key > best_key:
            best_key, best_tag = key, tag
    return best_tag


def platform_aliases(system: str | None = None, machine: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names this host's OS and CPU architecture go by in artifact names: ``(os_names, arch_names)``.

    ``system``/``machine`` default to platform.system()/platform.machine(); unknown values map to
    themselves, lowercased.
    """
    system = (system if system is not None else platform.system()).lower()
    machine = (machine if machine is not None else platform.machine()).lower()
    return _OS_ALIASES.get(system, (system,)), _ARCH_ALIASES.get(machine, (machine,))


def match_artifact(names: Sequence[str], system: str | None = None, machine: str | None = None) -> str | None:
    """The first of names (in the given order) built for this OS and architecture, or None.

    A name matches when, lowercased, it contains one of the OS names and one of the arch names from
    platform_aliases(). Checksum/signature files and dewy's own audit records never match.
    """
    os_names, arch_names = platform_aliases(system, machine)
    all_os = _all_aliases(_OS_ALIASES)
    all_arch = _all_aliases(_ARCH_ALIASES)
    for name in names:
        if not is_artifact_name(name):
            continue
        lowered = name.lower()
        if _contains_any(lowered, os_names, all_os) and _contains_any(lowered, arch_names, all_arch):
            return name
    return None


def is_artifact_name(name: str) -> bool:
    """False for files that accompany artifacts but are not one (checksums, signatures, shipped_to records)."""
    lowered = name.lower()
    return not any(fnmatch.fnmatchcase(lowered, pattern) for pattern in _NOT_ARTIFACT_PATTERNS)


# --- helpers -------------------------------------------------------------------------------------


def _strip_prefix(tag: str) -> str:
    """Drop one leading ``v``/``V``: Git tags conventionally carry it, semver itself does not."""
    return tag[1:] if tag[:1] in ("v", "V") else tag


def _normalised_set(versions: Iterable[str]) -> set[str]:
    """Normalise the excluded versions so ``v1.2.3`` and ``1.2.3`` exclude the same release."""
    result = set()
    for text in versions:
        version = parse(text)
        result.add(str(version) if version is not None else text)
    return result


def _eligible(version: semver.Version, pre_release: bool, slot: str, excluded: set[str]) -> bool:
    """Whether a parsed version may be deployed under the given gating rules."""
    if version.prerelease and not pre_release:
        return False
    if slot and (version.build or "") != slot:
        return False
    # Compare the full text: semver equality ignores build metadata, but refusing 1.2.3+blue
    # must not refuse 1.2.3+green.
    return str(version) not in excluded


def _order_key(version: semver.Version) -> tuple[semver.Version, bool]:
    """Sort key where greater means preferred: semver precedence, then "has no build metadata"."""
    # semver compares build metadata as equal; dropping it keeps that explicit and the key hashable.
    return (version.replace(build=None), not version.build)


def _all_aliases(table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Every alias of every platform in a table (used to recognise another platform's longer name)."""
    return tuple(sorted({alias for aliases in table.values() for alias in aliases}))


def _contains_any(name: str, wanted: tuple[str, ...], known: tuple[str, ...]) -> bool:
    """Whether name contains one of the wanted aliases as more than a fragment of another platform's name.

    Plain substring matching would let ``arm`` (armv7) match ``app_linux_arm64``; an occurrence that lies
    inside a longer alias of a *different* platform (``arm64``) is therefore not counted.
    """
    for alias in wanted:
        longer = [other for other in known if other not in wanted and alias in other and len(other) > len(alias)]
        start = name.find(alias)
        while start != -1:
            if not _covered_by(name, start, len(alias), longer):
                return True
            start = name.find(alias, start + 1)
    return False


def _covered_by(name: str, start: int, length: int, longer: list[str]) -> bool:
    """Whether the occurrence name[start:start+length] is part of an occurrence of one of the longer names."""
    end = start + length
    for other in longer:
        pos = name.find(other, max(0, end - len(other)))
        while pos != -1 and pos <= start:
            if pos + len(other) >= end:
                return True
            pos = name.find(other, pos + 1)
    return False
