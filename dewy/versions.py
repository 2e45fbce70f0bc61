"""Semantic versions of releases: parsing tags, picking the newest, and matching artifacts to this host.

A registry publishes releases under tags such as ``v1.2.3``, ``1.2.3-rc.1`` or ``v1.2.3+blue``.
Only strict semver tags count (an optional ``v``/``V`` prefix is allowed, as in Dewy); the build
metadata (``+blue``) is the *slot*, used for blue/green fleets that follow different release lines.
"""

from __future__ import annotations

import fnmatch
import platform
import re
from collections.abc import Iterable, Sequence

import semver

__all__ = [
    "CalVer",
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
    "*.sha256sum",
    "*.sha256.txt",
    "*.sha256sums",
    "*checksums.txt",
    "sha256sums",
    "*.sig",
    "*.asc",
    "shipped_to_*.txt",
)


# MAJOR.MINOR.PATCH where a part may have leading zeros, then whatever follows (checked strictly).
_ZERO_LED = re.compile(r"(\d+)\.(\d+)\.(\d+)((?:[-+].*)?)", re.DOTALL)


def parse(tag: str) -> semver.Version | None:
    """Parse a tag (``1.2.3``, ``v1.2.3``, ``V1.2.3-rc.1+blue``) into a Version; None if not strict semver."""
    if not isinstance(tag, str):
        return None
    text = _strip_prefix(tag)
    try:
        # semver 3 parses strictly by default: exactly MAJOR.MINOR.PATCH, no leading zeros.
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        pass
    # Dewy's semver regex (registry/semver.go) takes leading zeros in MAJOR.MINOR.PATCH (v1.02.3) and
    # compares them as numbers: so does dewy, or a tag Dewy deploys would be skipped here. The rest of
    # what strict semver rejects (empty or zero-led pre-release identifiers) stays rejected.
    match = _ZERO_LED.fullmatch(text)
    if match is None:
        return None
    try:
        return semver.Version.parse("%d.%d.%d%s" % (int(match[1]), int(match[2]), int(match[3]), match[4]))
    except ValueError:
        return None


def normalise(tag: str, calver: str | None = None) -> str:
    """The version text of a tag without its ``v`` prefix (``v1.2.3+blue`` -> ``1.2.3+blue``).

    Raises ValueError when the tag is not strict semver (or of the calver format when given), so a
    caller never stores a bogus version.
    """
    parsed = _parse_any(tag, CalVer(calver) if calver else None)
    if parsed is None:
        raise ValueError(f"not a {'calendar' if calver else 'semantic'} version: {tag!r}")
    return parsed[3]


def normalise_or_none(tag: str, calver: str | None = None) -> str | None:
    """normalise(tag, calver), or None when the tag is not a version of that scheme."""
    try:
        return normalise(tag, calver)
    except ValueError:
        return None


def is_older(version: str, than: str, calver: str | None = None) -> bool:
    """Whether version precedes `than` (build metadata ignored); False when either is not a version."""
    scheme = CalVer(calver) if calver else None
    a, b = _parse_any(version, scheme), _parse_any(than, scheme)
    return a is not None and b is not None and a[0] < b[0]


def select_newest(
    tags: Iterable[str],
    pre_release: bool = False,
    slot: str = "",
    exclude: Iterable[str] = (),
    calver: str | None = None,
) -> str | None:
    """Return the tag (exactly as given) of the newest deployable version among tags, or None.

    - tags that are not versions (semver, or the ``calver`` format when given) are ignored;
    - pre-releases are considered only when ``pre_release`` is true;
    - with ``slot`` set only versions whose build metadata equals it count; with no slot, every version
      counts, build metadata does not order them, and on a tie the tag without build metadata wins,
      then the lexically smallest tag (so the choice is deterministic);
    - ``exclude`` holds normalised versions (``1.2.3+blue``) that must not be chosen (e.g. refused ones).
    """
    scheme = CalVer(calver) if calver else None
    excluded = _normalised_set(exclude, scheme)
    best_key = None
    best_tag = None
    # Visit tags in lexical order and replace the best only on a strictly greater key, so that on a
    # tie the lexically smallest tag wins: the choice never depends on the registry's listing order.
    for tag in sorted(t for t in tags if isinstance(t, str)):
        parsed = _parse_any(tag, scheme)
        if parsed is None:
            continue
        key, prerelease, build, text = parsed
        if prerelease and not pre_release:
            continue
        if slot and (build or "") != slot:
            continue
        # Compare the full text: precedence ignores build metadata, but refusing 1.2.3+blue
        # must not refuse 1.2.3+green.
        if text in excluded:
            continue
        key = (key, not build)
        if best_key is None or key > best_key:
            best_key, best_tag = key, tag
    return best_tag


def explain(tags: Sequence[str], pre_release: bool = False, slot: str = "", exclude: Iterable[str] = (),
            calver: str | None = None) -> str:
    """Why select_newest() finds nothing among tags, in words: what was seen and what was ignored.

    E.g. "3 tags: 1 not a version, 2 pre-releases ignored (use ?pre-release=true)".
    """
    scheme = CalVer(calver) if calver else None
    excluded = _normalised_set(exclude, scheme)
    counts = {"not a version": 0, "pre-release": 0, "other slot": 0, "refused": 0}
    refused = []
    for tag in tags:
        parsed = _parse_any(tag, scheme)
        if parsed is None:
            counts["not a version"] += 1
        elif parsed[1] and not pre_release:
            counts["pre-release"] += 1
        elif slot and (parsed[2] or "") != slot:
            counts["other slot"] += 1
        elif parsed[3] in excluded:
            counts["refused"] += 1
            refused.append(parsed[3])
    parts = []
    if counts["not a version"]:
        parts.append("%d not %s" % (counts["not a version"], "in calver format %s" % calver if calver
                                     else "a semantic version"))
    if counts["pre-release"]:
        parts.append("%d pre-release%s ignored (?pre-release=true takes them)"
                     % (counts["pre-release"], "s" if counts["pre-release"] > 1 else ""))
    if counts["other slot"]:
        parts.append('%d not of slot "%s"' % (counts["other slot"], slot))
    if refused:
        parts.append("refused: %s (see .dewy/refused.json)" % ", ".join(sorted(refused)))
    head = "%d tag%s" % (len(tags), "" if len(tags) == 1 else "s")
    return head + (": " + ", ".join(parts) if parts else "")


class CalVer:
    """A calendar-version format in Dewy's language: ``YYYY YY 0Y MM 0M WW 0W DD 0D MICRO``, any other
    character literal; tags may carry a ``v`` prefix, ``-pre`` and ``+build`` (e.g. ``v2024.01.3-rc.1+blue``).
    Versions compare segment by segment, then a release above its pre-releases.
    """

    SPECIFIERS = {
        "YYYY": r"(\d{4})", "YY": r"(\d{1,3})", "0Y": r"(\d{2,3})",
        "MM": r"([1-9]|1[0-2])", "0M": r"(0[1-9]|1[0-2])",
        "WW": r"([1-9]|[1-4]\d|5[0-3])", "0W": r"(0[1-9]|[1-4]\d|5[0-3])",
        "DD": r"([1-9]|[12]\d|3[01])", "0D": r"(0[1-9]|[12]\d|3[01])",
        "MICRO": r"(\d+)",
    }
    # Longest first, so "YYYY" is not read as "YY" "YY" and "0M" not as a literal 0 then "M".
    _ORDER = ("YYYY", "0Y", "YY", "0M", "MM", "0W", "WW", "0D", "DD", "MICRO")

    def __init__(self, format: str):
        if not format:
            raise ValueError("calver format is empty")
        pattern, segments, rest = [], 0, format
        while rest:
            for spec in self._ORDER:
                if rest.startswith(spec):
                    pattern.append(self.SPECIFIERS[spec])
                    segments += 1
                    rest = rest[len(spec):]
                    break
            else:
                pattern.append(re.escape(rest[0]))
                rest = rest[1:]
        if not segments:
            raise ValueError("calver format %r has no specifier (expected YYYY, YY, 0Y, MM, 0M, WW, 0W, DD, 0D "
                             "or MICRO)" % format)
        self.format = format
        self.regex = re.compile(r"^[vV]?(%s)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$" % "".join(pattern))
        self.segments = segments

    def parse(self, tag: str):
        """(precedence key, pre-release, build, normalised text without "v") for a tag, or None if it does not match."""
        match = self.regex.match(tag) if isinstance(tag, str) else None
        if match is None:
            return None
        groups = match.groups()
        numbers = tuple(int(g) for g in groups[1:1 + self.segments])
        prerelease, build = groups[-2] or "", groups[-1] or ""
        return (numbers, _prerelease_key(prerelease)), prerelease, build, _strip_prefix(tag)


def platform_aliases(system: str | None = None, machine: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names this host's OS and CPU architecture go by in artifact names: ``(os_names, arch_names)``.

    ``system``/``machine`` default to platform.system()/platform.machine(); unknown values map to
    themselves, lowercased.
    """
    system = (system if system is not None else platform.system()).lower()
    machine = (machine if machine is not None else platform.machine()).lower()
    return _OS_ALIASES.get(system, (system,)), _ARCH_ALIASES.get(machine, (machine,))


def match_artifact(names: Sequence[str], system: str | None = None, machine: str | None = None) -> str | None:
    """The name built for this OS and architecture among names, or None.

    A name matches when, lowercased, it contains one of the OS names and one of the arch names from
    platform_aliases(). Checksum/signature files and dewy's own audit records never match. Among several
    matches (GoReleaser publishes ``app_1.0.0_linux_amd64.{apk,deb,rpm,tar.gz}``), an archive dewy unpacks
    wins, then any other file (a bare executable), then packages and metadata; ties go to the first in the
    given order.
    """
    os_names, arch_names = platform_aliases(system, machine)
    all_os = _all_aliases(_OS_ALIASES)
    all_arch = _all_aliases(_ARCH_ALIASES)
    best = None
    for name in names:
        if not is_artifact_name(name):
            continue
        lowered = name.lower()
        if _contains_any(lowered, os_names, all_os) and _contains_any(lowered, arch_names, all_arch):
            rank = _artifact_rank(lowered)
            if best is None or rank < best[0]:
                best = (rank, name)
    return best[1] if best else None


# File name suffix -> archive kind: what dewy.releases unpacks (anything else is installed as a bare
# executable file). Declared here, the lighter module, because artifact names are ranked by it too.
ARCHIVE_SUFFIXES = {
    ".tar.gz": "tar.gz",
    ".tgz": "tgz",
    ".tar.bz2": "tar.bz2",
    ".tar.xz": "tar.xz",
    ".tbz2": "tbz2",  # Dewy unpacks these two short forms too (cache/file.go); the kind is sniffed anyway
    ".txz": "txz",
    ".tar": "tar",
    ".zip": "zip",
}
# Files that are never what dewy should run: OS packages (a package manager's job), images, SBOMs, metadata.
_PACKAGE_SUFFIXES = (".apk", ".deb", ".rpm", ".msi", ".pkg", ".dmg", ".snap", ".flatpak", ".ipk", ".pkg.tar.zst",
                     ".json", ".sbom", ".spdx", ".txt", ".pem", ".crt", ".cert", ".md", ".yaml", ".yml")


def _artifact_rank(lowered: str) -> int:
    """0 for an archive dewy unpacks, 2 for a package or a metadata file, 1 for anything else."""
    if lowered.endswith(tuple(ARCHIVE_SUFFIXES)):
        return 0
    if lowered.endswith(_PACKAGE_SUFFIXES):
        return 2
    return 1


def is_artifact_name(name: str) -> bool:
    """False for files that accompany artifacts but are not one (checksums, signatures, shipped_to records)."""
    lowered = name.lower()
    return not any(fnmatch.fnmatchcase(lowered, pattern) for pattern in _NOT_ARTIFACT_PATTERNS)


# --- helpers -------------------------------------------------------------------------------------


def _strip_prefix(tag: str) -> str:
    """Drop one leading ``v``/``V``: Git tags conventionally carry it, semver itself does not."""
    return tag[1:] if tag[:1] in ("v", "V") else tag


def _normalised_set(versions: Iterable[str], scheme: "CalVer | None" = None) -> set[str]:
    """Normalise the excluded versions so ``v1.2.3`` and ``1.2.3`` exclude the same release."""
    result = set()
    for text in versions:
        parsed = _parse_any(text, scheme)
        result.add(parsed[3] if parsed is not None else _strip_prefix(text))
    return result


def _parse_any(tag: str, scheme: "CalVer | None"):
    """(precedence key, pre-release, build, normalised text) of a semver tag, or of a calver one with scheme."""
    if scheme is not None:
        return scheme.parse(tag)
    version = parse(tag)
    if version is None:
        return None
    # semver compares build metadata as equal; dropping it keeps that explicit and the key hashable.
    return version.replace(build=None), version.prerelease or "", version.build or "", str(version)


def _prerelease_key(prerelease: str) -> tuple:
    """A sort key for a pre-release under semver's rules: a release sorts above its pre-releases,
    numeric identifiers below alphanumeric ones, a longer list of equal identifiers above a shorter one."""
    if not prerelease:
        return (1,)
    return (0,) + tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in prerelease.split("."))


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
