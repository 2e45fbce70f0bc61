"""One deploy of one release: artifact -> cache (hashed while streaming) -> verify -> unpack ->
before-hook -> ask the master to switch -> after-hook, audit, shipped_to record, notify, prune.

A failure is one of two kinds:
- `Refuse`: the release itself is bad (checksum mismatch, unsafe or corrupt archive, the master could
  not start it). Its version goes into `.dewy/refused.json` and is not tried again; a newer one is.
- `Transient`: something around it failed (download error, before-hook, disk). Retried next poll.
A `dewy pause` (or a rollback's hold) that comes while a deploy runs stops it before its switch (`Paused`):
nothing is refused or counted as a failure; the next poll after `dewy resume` deploys it.
"""

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from dewy import artifact as artifact_pkg
from dewy import audit, checksums, hooks, protocol, releases
from dewy import log as dewy_log
from dewy.config import Config
from dewy.values import format_size
from dewy.registry.base import Release
from dewy.log import redact_text
from dewy.poller.outcomes import Refused, Repeats, record_event  # noqa: F401 - Refused, Repeats re-exported
from dewy.poller.partial import Partial
from dewy.poller.progress import Progress
from dewy.statefiles import StateFileError
from dewy.workdir import state_path

log = logging.getLogger("dewy.poller")

_HASH_CHUNK = 1 << 20


class Refuse(Exception):
    """The release is bad: refuse its version."""


class Transient(Exception):
    """This attempt failed for a reason outside the release: try again at the next poll."""


class Unfinished(Exception):
    """The artifact is still being published (copied into the registry without the atomic rename): no failure,
    nothing audited or notified; the next poll looks again."""


class Paused(Exception):
    """Deploys were paused while this one ran: it stops before the switch (not a failure)."""


class HookFailed(Transient):
    """The before-deploy-hook failed: retried next poll; notified as `hook-failed` with its output's tail."""

    def __init__(self, message: str, output: str):
        super().__init__(message)
        self.output = output


def cache_key(release: Release) -> str:
    """The cache key of a release's artifact: `<version>/<artifact name>`."""
    return cache_key_of(release.version, release.artifact_name)


def cache_key_of(version: str, artifact: str) -> str:
    """The cache key of version's artifact."""
    return "%s/%s" % (version, artifact)


def _digest_key(key: str) -> str:
    # Where the SHA-256 computed at download time is kept, to detect a damaged cached copy later.
    return "sha256:" + key


class _HashingWriter:
    """A write-only file that hashes and counts what passes through to the real one (and reports progress).

    limit: the most bytes it takes (None: no limit); one more raises the refusal too_big() makes, before
    the bytes reach the disk, so a registry serving an endless artifact cannot fill it."""

    def __init__(self, out, progress: Progress | None = None, limit: int | None = None,
                 too_big: Callable[[], Exception] | None = None):
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0
        self.progress = progress
        self.limit = limit
        self.too_big = too_big

    def write(self, data) -> int:
        """Hash data and write it through."""
        if self.limit is not None and self.size + len(data) > self.limit:
            raise self.too_big()
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        if self.progress is not None:
            self.progress.update(len(data))
        return len(data)


def _sha256_of(fh) -> str:
    sha = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
        sha.update(chunk)
    return sha.hexdigest()


@dataclass(frozen=True)
class Backends:
    """What one deploy runs against, fixed for its whole run (a `reload` meanwhile must not switch them).

    notifier: a dewy.notify.dispatch.Dispatcher (`emit(name, version, **fields)`, returns at once);
    metrics: a dewy.poller.metrics.Metrics (a no-op one when `metrics` is off)."""

    config: Config
    registry: Any
    cache: Any
    notifier: Any
    metrics: Any = None


class Deploy:
    """Deploys one release: the poller hands it the backends, what runs now and a way to ask the master."""

    def __init__(self, release: Release, backends: Backends, previous: tuple, ask_master: Callable[..., dict],
                 refused: "Refused", repeats: Repeats, tell_master: Callable[..., None] | None = None,
                 stage: Callable[[str, str], None] | None = None, kept_back: Callable[[str], bool] | None = None):
        self.release = release
        self.tell_master = tell_master  # sends a message to the master that needs no answer (progress)
        # stage(state, reason): the poller states each step (dewy/poller/states.py); kept_back(version): whether a
        # pause or a hold keeps the version back now (asked again before the switch, the point of no return).
        self.stage = stage or (lambda state, reason: None)
        self.kept_back = kept_back or (lambda version: False)
        self.outcome = None  # deployed | refused | failed | paused, once run() returned
        self.backends = backends
        self.config, self.registry, self.cache = backends.config, backends.registry, backends.cache
        self.previous_version, self.previous_dir = previous
        self.ask_master = ask_master
        self.refused = refused
        self.repeats = repeats
        self.release_dir = None
        self.sha256 = None
        self._artifact = None
        self.metrics = backends.metrics
        self.started = time.monotonic()  # the release was seen: the deploy duration runs from here
        self.switch_seconds = None       # how long the master took to switch (deploy sent -> answer)

    # --- the pipeline ---------------------------------------------------------------------------

    def run(self) -> str | None:
        """Deploy the release; return None on success (then `release_dir` serves), else the error
        (already logged and audited). Every line logged meanwhile carries the version."""
        with dewy_log.fields(version=self.release.version):
            return self._run()

    def _run(self) -> str | None:
        release = self.release
        log.info("deploying %s (%s) over %s", release.version, release.artifact_name,
                 self.previous_version or "nothing")
        # On failure: clean up first, then record, so whoever sees the audit line sees the cleaned-up state.
        self.outcome = "failed"
        try:
            self.sha256 = self.fetch()
            self.check_paused()
            self.stage("deploying", "unpacking")
            self.release_dir = self.install()
            self.before_hook()
            self.check_paused()
            try:
                releases.Manifest(self.config.workdir).record(
                    self.release_dir, release.version, release.tag, release.artifact_name, self.sha256)
            except StateFileError as exc:  # never written over: that would lose what it knows
                raise Transient(str(exc)) from None
            self.stage("deploying", "switching")
            asked = time.monotonic()
            answer = self.ask_master(
                version=release.version, tag=release.tag, release_dir=self.release_dir,
                artifact=release.artifact_name, sha256=self.sha256, previous_version=self.previous_version)
            self.switch_seconds = round(time.monotonic() - asked, 3)
        except Unfinished as exc:
            self.discard_release_dir()
            self.outcome = "unfinished"
            log.info("%s", exc)
            return str(exc)
        except Paused as exc:
            self.discard_release_dir()
            self.outcome = "paused"
            log.warning("%s", exc)
            return str(exc)
        except Refuse as exc:
            self.discard_release_dir()
            return self.refuse_unless_changing("refused", str(exc))
        except HookFailed as exc:
            self.discard_release_dir()
            return self.fail(str(exc), event="hook-failed", hook="before-deploy-hook", output=exc.output)
        except Transient as exc:
            self.discard_release_dir()
            return self.fail(str(exc))
        except Exception:
            self.discard_release_dir()
            raise
        if not answer.get("ok"):
            self.discard_release_dir()
            error = "master: %s" % (answer.get("error") or "the release did not start")
            return self.refuse_unless_changing("failed", error, answer)
        self.succeeded(answer)
        self.outcome = "deployed"
        return None

    def check_paused(self) -> None:
        """Paused meanwhile (or held by a rollback): stop here, before the switch."""
        if self.kept_back(self.release.version):
            raise Paused("deploys were paused while %s was being deployed: stopped before switching to it (the "
                         "cached download is kept; `dewy resume` deploys it)" % self.release.version)

    def unfinished(self) -> str | None:
        """Why the artifact may still be being published (a young file in a file:// registry), else None."""
        check = getattr(self.registry, "unfinished", None)
        try:
            return check(self.release) if check is not None else None
        except Exception:  # noqa: BLE001 - a check that fails leaves the refusal as it was
            return None

    def fetch(self) -> str:
        """Make sure the cache holds the verified artifact; return its SHA-256."""
        cache, release, key = self.cache, self.release, cache_key(self.release)
        expected = self.expected_sha256()
        try:
            cached = cache.open_read(key)
        except OSError as exc:  # the cache directory broke under us (deleted, replaced by a file)
            raise Transient("cannot read the cache: %s" % exc) from exc
        if cached is not None:
            self.stage("downloading", "cached")
            with cached:
                digest = _sha256_of(cached)
            recorded = cache.get(_digest_key(key))
            want = expected or (recorded.decode() if recorded else None)
            if want is None or digest == want:
                log.info("using cached %s (sha256 %s)", key, digest)
                return digest
            log.warning("cached %s has sha256 %s, expected %s: downloading again", key, digest, want)
            cache.delete(key)
            cache.delete(_digest_key(key))
        fetcher = self.artifact()
        self.stage("downloading", "download")
        began = time.monotonic()
        progress = Progress(release.artifact_name, fetcher.size, listener=self.tell_progress)

        def writer_to(out):  # no archive bigger than max-release-size can unpack within it: stop downloading there
            return _HashingWriter(out, progress, self.config.max_release_size, lambda: Refuse(
                "artifact %s of %s is larger than %s (max-release-size): refused without downloading the rest"
                % (release.artifact_name, release.version, format_size(self.config.max_release_size))))

        def verify(digest):
            if expected is not None and digest != expected:
                raise Refuse("checksum mismatch for %s %s: got sha256 %s, the release publishes %s"
                             % (release.version, release.artifact_name, digest, expected))
        try:
            if fetcher.resumable:
                writer = self.fetch_resuming(fetcher, writer_to, verify, progress)
            else:
                with cache.open_write(key) as out:
                    writer = writer_to(out)
                    fetcher.fetch(writer)
                    # Raised inside the block: open_write throws the bytes away, nothing bad is cached.
                    verify(writer.sha.hexdigest())
            digest = writer.sha.hexdigest()
        except (artifact_pkg.ArtifactError, OSError) as exc:
            raise Transient("download of %s failed: %s" % (release.artifact_name, exc)) from exc
        finally:
            if self.metrics is not None:
                self.metrics.downloaded(progress.done)  # every byte fetched counts, failed downloads' too
        try:
            cache.set(_digest_key(key), digest.encode())
        except OSError as exc:
            # Only a hint for checking the cached copy later (the download itself was verified): a full disk
            # here must not turn into a traceback; unpacking will say whether the deploy can go on.
            log.warning("cannot record the sha256 of the cached %s: %s", key, exc)
        self.tell_progress(progress.snapshot())  # the whole of it: shown until this deploy's outcome
        seconds = round(time.monotonic() - began, 3)
        log.info("downloaded %s: %d bytes in %.1fs, sha256 %s%s", release.artifact_name, writer.size, seconds, digest,
                 " (verified against %s)" % (release.checksum_source or "the published checksum")
                 if expected else "")
        self.backends.notifier.emit("downloaded", release.version, artifact=release.artifact_name,
                                    bytes=writer.size, seconds=seconds, sha256=digest)
        return digest

    def fetch_resuming(self, fetcher, writer_to, verify, progress) -> "_HashingWriter":
        """Download through a Partial kept in .dewy/ across a poller restart (a USR2 during a download resumes
        with a Range request instead of starting over), then into the cache; the writer that hashed it all."""
        partial = Partial(self.config.workdir, cache_key(self.release), self.release.artifact_url)
        start, validator = partial.resume_point()
        if start:
            log.info("resuming the download of %s at byte %d", self.release.artifact_name, start)
        while True:
            fetcher.start, fetcher.validator = start, validator
            fh = partial.open(start)
            writer = writer_to(fh)
            try:
                if start:
                    partial.hash_into(writer.sha, start)
                    writer.size = progress.done = start
                fetcher.fetch(writer)
                fh.flush()
            except artifact_pkg.ArtifactError:
                if start and writer.size == start:  # the file changed (no 206 for If-Range): from byte 0
                    fh.close()
                    log.info("cannot resume the download of %s: downloading it whole", self.release.artifact_name)
                    partial.discard()
                    start, validator, progress.done = 0, None, 0
                    continue
                partial.keep(fh, fetcher.validator)
                raise
            except Refuse:
                partial.discard()
                raise
            except BaseException:  # a stop (SIGTERM, USR2), a broken connection, a full disk: keep what came
                partial.keep(fh, fetcher.validator)
                raise
            finally:
                fh.close()
            break
        try:
            verify(writer.sha.hexdigest())
        except Refuse:
            partial.discard()
            raise
        partial.into_cache(self.cache, cache_key(self.release))
        return writer

    def tell_progress(self, snapshot: dict) -> None:
        """Pass a download progress snapshot on to the master (`dewy status`, `dewy deploy-now` show it)."""
        if self.tell_master is not None:
            known = {name for name, _ in protocol.Progress.FIELDS}  # elapsed_s stays here
            self.tell_master("progress", version=self.release.version, artifact=self.release.artifact_name,
                             **{key: value for key, value in snapshot.items() if key in known})

    def expected_sha256(self) -> str | None:
        """The checksum to verify against under `verify-checksum`; Refuse when required and none is published."""
        release, policy = self.release, self.config.verify_checksum
        if policy == "off":
            return None
        if release.sha256:
            return release.sha256.lower()
        if policy == "required":
            raise Refuse("no checksum published for %s %s, and verify-checksum = required (looked for %s%s)" % (
                release.version, release.artifact_name, checksums.looked_for(release.artifact_name),
                ", GitHub's asset digest" if release.artifact_url.startswith("ghr://") else ""))
        return None

    def artifact(self):
        """The artifact store object for this release (made once)."""
        if self._artifact is None:
            try:
                self._artifact = artifact_pkg.from_url(self.release.artifact_url)
            except ValueError as exc:  # a URL no artifact store takes: the registry published a bad release
                raise Refuse("unusable artifact URL for %s: %s" % (self.release.version, redact_text(str(exc))))
        return self._artifact

    def artifact_changing(self) -> bool:
        """Whether the published artifact is still being written (then a bad copy is not the release's fault)."""
        try:
            return self.artifact().changing()
        except Exception:  # noqa: BLE001 - a store that cannot tell is taken at its word: not changing
            return False

    def refuse_unless_changing(self, result: str, error: str, answer: dict | None = None) -> str:
        """Refuse the version, or only retry it when the artifact was still being written meanwhile.

        Either way the cached copy goes: it is bad, or it is of a release we refuse.
        """
        self.forget_cached()
        if self.artifact_changing():
            return self.fail("%s (the artifact is still being written: will try again)" % error)
        return self.refuse(result, error, answer)

    def forget_cached(self) -> None:
        """Drop the cached artifact and its recorded checksum."""
        drop_cached(self.cache, cache_key(self.release))

    def install(self) -> str:
        """Unpack the cached artifact into a new release directory; return its absolute path."""
        cache, release, key = self.cache, self.release, cache_key(self.release)
        releases_dir = os.path.join(self.config.workdir, "releases")
        # Bounds counted while unpacking: past either, the release is refused (releases.TooLarge).
        limits = dict(max_size=self.config.max_release_size, max_files=self.config.max_release_files)
        try:
            path = cache.path(key)
            if path is not None:
                return releases.install(path, release.artifact_name, releases_dir, **limits)
            # The cache has no local file (memory, or a network cache later): spool it to disk first.
            tmp_dir = state_path(self.config.workdir)
            os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
            with tempfile.NamedTemporaryFile(prefix=".artifact.", dir=tmp_dir) as spool:
                src = cache.open_read(key)
                if src is None:
                    raise Transient("cached artifact %s vanished before unpacking" % key)
                with src:
                    shutil.copyfileobj(src, spool, _HASH_CHUNK)
                spool.flush()
                return releases.install(spool.name, release.artifact_name, releases_dir, **limits)
        except releases.UnsafeArchive as exc:
            raise Refuse(str(exc)) from exc
        except releases.Truncated as exc:
            young = self.unfinished()  # a copy into the registry still under way (no atomic rename)?
            if young:
                self.forget_cached()
                raise Unfinished("%s is not complete yet (%s): waiting for it, looked at again at the next poll"
                                 % (self.release.artifact_name, young)) from exc
            raise Refuse(str(exc)) from exc
        except releases.ReleaseError as exc:
            # A real I/O error (disk full, permissions) is the host's fault, not the release's.
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno is not None:
                raise Transient(str(exc)) from exc
            raise Refuse(str(exc)) from exc
        except OSError as exc:
            raise Transient("cannot unpack %s: %s" % (release.artifact_name, exc)) from exc

    def hook_env(self) -> dict:
        """The environment the deploy hooks get on top of dewy's own."""
        return hooks.env(self.release.version, self.release_dir, self.previous_version, self.config.mode)

    def before_hook(self) -> None:
        """Run before-deploy-hook; a failure aborts this deploy (Transient: retried next poll)."""
        command = self.config.before_deploy_hook
        if not command:
            return
        self.stage("deploying", "before-hook")
        result = hooks.run_hook(command, self.config.workdir, self.hook_env(), self.config.hook_timeout,
                                keep=self.config.app_env_keep)
        if result.output.strip():
            log.info("before-deploy-hook output:\n%s", result.output.rstrip())
        if not result.ok:
            raise HookFailed("before-deploy-hook failed (%s)" % result.describe(), result.output)
        hooks.report_success(self.backends.notifier, "before-deploy-hook", result, self.release.version)

    # --- outcomes -------------------------------------------------------------------------------

    def succeeded(self, answer: dict) -> None:
        """The master switched: after-hook, audit, shipped_to record, notify, prune."""
        config, release = self.config, self.release
        release_dir = answer.get("release_dir") or self.release_dir
        self.release_dir = release_dir
        self.repeats.clear()
        error = answer.get("error") or None  # rollback = off: it failed its readiness check and serves anyway
        if error:
            self.backends.notifier.emit("failed", release.version, error=error, kept=True,
                                        previous_version=self.previous_version)
        if self.metrics is not None:
            self.metrics.deployed(release.version, time.monotonic() - self.started)
        if config.after_deploy_hook:
            self.stage("deploying", "after-hook")
            result = hooks.run_hook(config.after_deploy_hook, config.workdir, self.hook_env(), config.hook_timeout,
                                    keep=config.app_env_keep)
            if result.output.strip():
                log.info("after-deploy-hook output:\n%s", result.output.rstrip())
            if not result.ok:
                # The release is live already: report the hook failure, do not undo the deploy.
                error = "after-deploy-hook failed (%s)" % result.describe()
                log.warning("%s", error)
                self.backends.notifier.emit("hook-failed", release.version, hook="after-deploy-hook", error=error,
                                            output=result.output, previous_version=self.previous_version)
            else:
                hooks.report_success(self.backends.notifier, "after-deploy-hook", result, release.version,
                                     previous_version=self.previous_version)
        host = audit.hostname(self.config.host_id)
        self.stage("deploying", "finishing")
        self.report(answer.get("generation"), release_dir=release_dir)
        self.prune(release_dir)
        # The audit line comes last: whoever sees it sees the whole deploy done.
        self.record("deployed", error, notify={"switch_seconds": self.switch_seconds},
                    generation=answer.get("generation"), switch_seconds=self.switch_seconds)
        generation = answer.get("generation")
        log.info("deployed %s on %s in %s (%spreviously %s)", release.version, host, release_dir,
                 "generation %s, " % generation if generation else "",  # assets mode has no generations
                 self.previous_version or "nothing", extra={"generation": generation} if generation else {})

    def report(self, generation, release_dir: str = "", error: str | None = None) -> None:
        """Leave the shipped_to record (or gRPC Report) in the registry; a failure is logged, never fatal."""
        release = self.release
        shipped = audit.Shipped.now(self.config.mode, release.version, release.tag, host_id=self.config.host_id,
                                    previous_version=self.previous_version, release_dir=release_dir or "",
                                    error=error)
        try:
            self.registry.report(release, shipped)
        except Exception as exc:  # noqa: BLE001 - the record is a courtesy; the deploy stands
            log.warning("cannot write the shipped_to record for %s: %s", release.version, redact_text(str(exc)))

    def prune(self, release_dir: str) -> None:
        """Keep keep_releases newest release directories (never the new or the previous one), and drop
        the cached artifacts of every version this workdir no longer keeps."""
        manifest = releases.Manifest(self.config.workdir)
        try:
            removed = releases.prune(os.path.join(self.config.workdir, "releases"), self.config.keep_releases,
                                     protect={release_dir, self.previous_dir} - {None},
                                     order=releases.history_order(manifest.entries()))
        except (OSError, StateFileError) as exc:
            log.warning("cannot prune old releases: %s", exc)
            return
        for path in removed:
            manifest.forget(path)
            log.info("pruned %s", path)
        prune_cache(self.cache, self.config.workdir, manifest)

    def refuse(self, result: str, error: str, answer: dict | None = None) -> str:
        """Refuse the version for good; audit, count and notify it as `result`: `refused` (the release is bad
        before it ran) or `failed` (it did not start; the notification says "version refused")."""
        error = dewy_log.scrub(error)  # a hook's or the app's output may quote a secret of the environment
        release = self.release
        self.outcome = "refused"
        self.refused.add(release.version, error)
        log.error("refusing %s: %s", release.version, error)
        extra = {"generation": answer.get("generation")} if answer else {}
        self.report(extra.get("generation"), error=error)
        if self.metrics is not None:
            self.metrics.deploy_result(result)
        self.record(result, error, notify={"refused": True} if result == "failed" else None, **extra)
        return error

    def fail(self, error: str, event: str = "failed", **notify) -> str:
        """A transient failure: log it; audit, report and notify (`event`, with `notify` fields) only the first
        of a run of identical ones."""
        error = dewy_log.scrub(error)
        if self.metrics is not None:
            self.metrics.deploy_result("failed")
        if not self.repeats.first_time(self.release.version, error):
            # Audited and notified once, but every attempt ends with its outcome in the log.
            log.warning("deploy of %s failed again (%d times in a row; will retry): %s", self.release.version,
                        self.repeats.count, error)
            return error
        log.error("deploy of %s failed (will retry): %s", self.release.version, error)
        self.report(None, error=error)
        self.record("failed", error, event=event, notify=notify)
        return error

    def discard_release_dir(self) -> None:
        """Remove the release directory of a deploy that did not happen (never the current one)."""
        path = self.release_dir
        if not path:
            return
        current = releases.read_link(os.path.join(self.config.workdir, "current"))
        if current and os.path.realpath(path) == current:
            return
        shutil.rmtree(path, ignore_errors=True)
        releases.Manifest(self.config.workdir).forget(path)

    def record(self, result: str, error: str | None, event: str | None = None, notify: dict | None = None,
               **extra) -> None:
        """This deploy's audit line and notification `event` (default: result; `notify`: extra fields for the
        notification only); a failure to write either is logged, not fatal."""
        release = self.release
        entry = {
            "version": release.version, "previous_version": self.previous_version, "error": error,
            "tag": release.tag, "artifact": release.artifact_name, "sha256": self.sha256,
            "release_dir": self.release_dir,
        }
        entry.update(extra)
        record_event(self.backends, result, entry, event, **(notify or {}))


def prune_cache(cache, workdir: str, manifest: "releases.Manifest") -> None:
    """Delete the cached artifacts this workdir downloaded (per its audit log) for versions it keeps no
    release of. Only keys this workdir's own history names are touched: a cache shared with other apps
    keeps theirs."""
    kept = {cache_key_of(entry["version"], entry["artifact"]) for entry in manifest.entries().values()
            if entry.get("version") and entry.get("artifact")}
    known = {cache_key_of(entry["version"], entry["artifact"]) for entry in audit.entries(workdir)
             if isinstance(entry.get("version"), str) and isinstance(entry.get("artifact"), str)}
    for key in sorted(known - kept):
        try:
            held = cache.open_read(key)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot tell only wastes space
            log.warning("cannot look up %s in the cache: %s", key, exc)
            continue
        if held is None:
            continue
        held.close()  # only asked whether it is there
        if drop_cached(cache, key):
            log.info("dropped %s from the download cache", key)


def drop_cached(cache, key: str) -> bool:
    """Delete a cached artifact and its recorded checksum; False (logged) when the cache cannot."""
    try:
        cache.delete(key)
        cache.delete(_digest_key(key))
        return True
    except Exception as exc:  # noqa: BLE001 - a cache that cannot delete only wastes space
        log.warning("cannot remove %s from the cache: %s", key, exc)
        return False
