"""The registry interface: `latest()` names the release to run, `report()` leaves an audit record.

Every registry shares the same selection rules, implemented once here: the query keys `artifact`,
`pre-release` and `calver`, the slot (build metadata), refused versions, the artifact picked by name
or by this host's OS/arch, and checksums published next to the artifact (dewy.checksums).
"""

import functools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from dewy import checksums, urls, versions

log = logging.getLogger("dewy.registry")

# Query keys every registry understands; a backend adds its own (endpoint, no-tls...) in SCHEMES.
COMMON_KEYS = frozenset({"artifact", "pre-release", "calver"})
MAX_REMEMBERED = 20000  # names a registry object remembers having logged (a long-lived poller keeps it)


class RegistryError(Exception):
    """The registry could not be read, or holds nothing deployable (one-line message). The message loses
    control characters on the way in (urls.plain_text): registry text reaches terminals, logs, notifications."""

    def __init__(self, message="", *args):
        super().__init__(urls.plain_text(message), *args)


DEADLINE_ENV = "DEWY_TEST_REGISTRY_DEADLINE"  # test-only: seconds instead of Registry.total_deadline


class RegistryTimeout(RegistryError):
    """A registry call went past its total deadline (Registry.total_deadline): a registry that trickles its answer."""


def with_deadline(method):
    """Decorate a registry call with a total deadline of `self.total_deadline` seconds (SIGALRM, main thread only):
    per-read timeouts do not end a server that sends one byte every 10 s. Past it the call raises
    RegistryTimeout, an ordinary registry failure (backoff, one notification). Nested calls share the outer
    deadline; off the main thread (no signals there) the per-request timeouts alone apply."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        seconds = float(os.environ.get(DEADLINE_ENV) or 0) or getattr(self, "total_deadline", None)
        if not seconds or threading.current_thread() is not threading.main_thread():
            return method(self, *args, **kwargs)
        outer = signal.getitimer(signal.ITIMER_REAL)[0]  # an enclosing deadline (ours, or a test runner's)
        if outer and outer <= seconds:
            return method(self, *args, **kwargs)  # it ends first
        began = time.monotonic()

        def expired(signum, frame):
            from dewy.log import redact

            raise RegistryTimeout("registry %s: no complete answer within %gs (the total deadline of a registry "
                                  "call)" % (redact(getattr(self, "url", "") or "?"), seconds))

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return method(self, *args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer:  # give the enclosing one back what is left of it
                signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - began), 0.001))

    return call


class NothingDeployable(RegistryError):
    """The registry answered, but nothing in it is deployable now (no versions, only refused ones, other slots,
    pre-releases...): the message says why. Not an outage: the poller neither backs off nor notifies it."""


class NotYetPublished(NothingDeployable):
    """The newest release exists but its artifact is not uploaded yet (CI still building): not an error yet.

    since: Unix time the release appeared (a version directory's mtime), when the registry knows it; the
    poller waits quietly for a young release and warns about one that has lacked its artifact for long.
    """

    def __init__(self, message: str, since: float | None = None):
        super().__init__(message)
        self.since = since


@dataclass(frozen=True)
class Release:
    """One deployable release as a registry publishes it."""

    version: str                # normalised version, no "v": "1.2.3-rc.1+blue" (or a calver "2024.01.3")
    tag: str                    # as published: "v1.2.3-rc.1+blue"
    artifact_name: str          # "app_linux_amd64.tar.gz"
    artifact_url: str           # what dewy.artifact.from_url() fetches
    sha256: str | None = None   # expected checksum when the release publishes one
    checksum_source: str | None = None  # where sha256 came from: "checksums.txt", "GitHub asset digest"...


def validate_common(parsed: urls.ParsedURL) -> None:
    """Raise ValueError for a bad value of a common query key (pre-release, calver, artifact)."""
    urls.query_bool(parsed, "pre-release")
    if "calver" in parsed.query:
        try:
            versions.CalVer(parsed.query["calver"])
        except ValueError as exc:
            raise ValueError('bad value "%s" for query key "calver" of %s://: %s'
                             % (parsed.query["calver"], parsed.scheme, exc)) from None
    if "artifact" in parsed.query and not plain_name(parsed.query["artifact"]):
        raise ValueError('bad value "%s" for query key "artifact" of %s://; allowed: a file name'
                         % (shown(parsed.query["artifact"]), parsed.scheme))


def plain_name(name: str) -> bool:
    """True for a file name without directory parts (no traversal out of a version directory) and
    without control characters (a newline in a name would forge log lines and audit entries)."""
    return (isinstance(name, str) and bool(name) and name not in (".", "..") and "/" not in name
            and "\\" not in name and not any(ord(c) < 0x20 or ord(c) == 0x7f for c in name))


def inside(url: str, head: str, tail: str = "") -> bool:
    """Whether url is head + a relative object path + tail, the path (%-decoded) free of empty, `.` and `..`
    segments, `?`, `#` and control characters: an artifact URL under a store's own prefix."""
    if not isinstance(url, str) or not url.startswith(head) or not url.endswith(tail) \
            or len(url) <= len(head) + len(tail):
        return False
    import urllib.parse  # here: the master imports registry.base's names without urllib (lean rule)

    middle = url[len(head):len(url) - len(tail)]
    if "?" in middle or "#" in middle:
        return False
    path = urllib.parse.unquote(middle)
    return all(part not in ("", ".", "..") for part in path.split("/")) and \
        not any(ord(c) < 0x20 or ord(c) == 0x7f for c in path)


def shown(text, limit: int = 120) -> str:
    """A registry-supplied string for a one-line message: control characters escaped, shortened."""
    text = str(text)
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in text):
        text = text.encode("unicode_escape").decode("ascii")  # "\n" -> "\\n": still one line
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown_list(names: Sequence[str], most: int = 10) -> str:
    """Names for a one-line message: each shown(), at most `most` of them, "none" for no name."""
    if not names:
        return "none"
    head = ", ".join(shown(n, 80) for n in names[:most])
    return head + (" and %d more" % (len(names) - most) if len(names) > most else "")


class Registry:
    """Base class of the registries; constructed by dewy.registry.from_url(url, cache, slot).

    Subclasses list tags and files; `newest_tag`, `pick_artifact` and `find_checksum` apply the rules.
    """

    # The artifact name used when the URL has no ?artifact= (GitHub: $GITHUB_ARTIFACT).
    default_artifact: str | None = None
    # (connect, read) seconds of each HTTP request a registry makes. A poll makes a few (a listing, a
    # version's files, a checksum file) and the master counts a poller silent for 60 s plus its ping
    # delay as wedged, so a registry that accepts and never answers must fail a poll well before that.
    timeout: tuple = (5.0, 15.0)
    # Seconds one whole call (latest, report) may take, however the registry trickles its bytes: well inside
    # the master's 60 s wedge budget. Subclasses' latest() and report() get it (__init_subclass__).
    total_deadline: float = 40.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("latest", "report"):
            if name in cls.__dict__ and not getattr(cls.__dict__[name], "_deadline", False):
                wrapped = with_deadline(cls.__dict__[name])
                wrapped._deadline = True
                setattr(cls, name, wrapped)

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a bad query value (a backend extends this for its own keys)."""
        validate_common(parsed)

    def __init__(self, url: str, cache=None, slot: str = ""):
        self.url = url
        self.cache = cache
        self.slot = slot
        parsed = urls.parse(url)
        self.validate(parsed)
        self.parsed = parsed
        self.pre_release = urls.query_bool(parsed, "pre-release")
        self.artifact = parsed.query.get("artifact") or self.default_artifact or None
        self.calver = parsed.query.get("calver") or None
        self._skipped = set()  # names already logged as not being versions

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest deployable release whose version is not in exclude; RegistryError if none."""
        raise NotImplementedError

    def owns(self, url: str) -> bool:
        """Whether url names an artifact in this registry's own store (same scheme, bucket and prefix,
        repository, or a path under the file:// root). A shared-cache entry naming a URL for which this is
        False is never fetched as it is (dewy/registry/shared.py). False unless a backend can tell."""
        return False

    def report(self, release: Release, shipped) -> None:
        """Leave the audit record `shipped` (a dewy.audit.Shipped) next to the release's artifacts.

        Called after every deploy attempt; `shipped.error` is set for a failed one. Registries that
        only record successes (file, S3, GCS, GitHub: Dewy's shipped_to files) skip failures.
        """
        raise NotImplementedError

    # --- the shared rules ---------------------------------------------------------------------

    @staticmethod
    def record_name(shipped) -> str | None:
        """The shipped_to file name to write for shipped, or None for a failed deploy (Dewy's records
        name successful deploys only); RegistryError for a name that is not one plain file name."""
        if shipped.error:
            return None
        filename = shipped.filename()
        if not plain_name(filename):
            raise RegistryError("bad report file name %r" % filename)
        return filename

    def version_of(self, tag: str) -> str:
        """The normalised version of a tag under this registry's scheme (semver, or calver)."""
        return versions.normalise(tag, self.calver)

    def newest_tag(self, tags: Sequence[str], exclude: Iterable[str] = (), where: str = "") -> str:
        """The newest deployable tag among tags; RegistryError saying why none qualifies."""
        exclude = tuple(exclude)
        for name in tags:
            if name not in self._skipped and versions.normalise_or_none(name, self.calver) is None:
                if len(self._skipped) >= MAX_REMEMBERED:
                    self._skipped.clear()  # a registry minting new non-version tags forever: bounded memory
                self._skipped.add(name)  # said once per name, not at every poll
                log.debug("registry %s: skipping %r: not a %s version", where or self.parsed.scheme, name,
                          "calendar (%s)" % self.calver if self.calver else "semantic")
        tag = versions.select_newest(tags, pre_release=self.pre_release, slot=self.slot, exclude=exclude,
                                     calver=self.calver)
        if tag is None:
            raise NothingDeployable("no deployable version%s: %s" % (
                " in " + where if where else "",
                versions.explain(list(tags), self.pre_release, self.slot, exclude, self.calver)))
        self._warn_duplicates(tag, tags, where)
        return tag

    def _warn_duplicates(self, tag: str, tags: Sequence[str], where: str) -> None:
        """Warn once when the chosen version is published under more than one tag (`v1.0.0` and `1.0.0`):
        only the chosen one is looked at, whatever the other holds."""
        version = versions.normalise(tag, self.calver)
        # Runs at every poll over every tag: a twin's text holds the version's (only a prefix such as `v`
        # differs), so only those few are parsed again.
        twins = sorted(t for t in tags if t != tag and version in t
                       and versions.normalise_or_none(t, self.calver) == version)
        if not twins:
            return
        said = ("duplicate", tag) + tuple(twins)
        if said in self._skipped:
            return
        self._skipped.add(said)
        log.warning('registry %s: version %s is published twice, as %s: using "%s" only (remove the other)',
                    where or self.parsed.scheme, version, " and ".join('"%s"' % shown(t) for t in [tag] + twins),
                    shown(tag))

    def pick_artifact(self, version: str, names: Sequence[str], since: float | None = None) -> str:
        """The artifact named by ?artifact=, else the name matching this OS/arch (an archive dewy unpacks
        before other files, packages last: versions.match_artifact); NotYetPublished if none (`since`: when
        the version appeared, if known).

        Names that are not one plain file name (`../x`, a newline, a backslash) are never picked: the
        artifact name becomes a cache key, an unpacking hint, log lines and audit entries.
        """
        unsafe = [n for n in names if not plain_name(n)]
        names = [n for n in names if plain_name(n)]
        ignored = " (%d unsafe name%s ignored)" % (len(unsafe), "" if len(unsafe) == 1 else "s") if unsafe else ""
        if self.artifact is not None:
            if self.artifact not in names:
                raise NotYetPublished('version %s has no artifact "%s"; files: %s%s'
                                      % (version, self.artifact, shown_list(names), ignored), since)
            return self.artifact
        name = versions.match_artifact([n for n in names if versions.is_artifact_name(n)])
        if name is None:
            os_names, arch_names = versions.platform_aliases()
            raise NotYetPublished("version %s has no artifact for %s/%s; files: %s%s (name one with ?artifact=)"
                                  % (version, os_names[0], arch_names[0], shown_list(names), ignored), since)
        return name

    @staticmethod
    def find_checksum(artifact: str, names: Sequence[str], read: Callable[[str], str]) -> tuple:
        """(sha256, source file) published for artifact among names, or (None, None); RegistryError on conflict."""
        try:
            return checksums.find(artifact, names, read)
        except checksums.ChecksumConflict as exc:
            raise RegistryError(str(exc)) from None
