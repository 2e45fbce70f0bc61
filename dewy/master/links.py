"""The `current` symlink (and `dir` in assets mode) as the lifecycle keeps them: where they point, going
back from a deploy a killed master left unfinished, a release directory deleted under a running app.

`current` moves to another release only through Lifecycle.switch() (its status record first); this
module points it back (cold start, a deploy that did not finish) and reads it.
"""

import logging
import os

from .. import current  # dewy.current, not dewy.releases: no tarfile/zipfile here
from .generation import dir_problem

log = logging.getLogger("dewy.master")


class Links:
    """The `current` and `dir` links of one Lifecycle (lc)."""

    def __init__(self, lc):
        self.lc = lc

    def version_of(self, release_dir: str | None) -> str | None:
        """The version recorded for an unpacked release dir."""
        if not release_dir:
            return None
        return current.Manifest(self.lc.cfg.workdir).version_of(release_dir)

    def undo_interrupted_deploy(self, deploying: dict | None) -> None:
        if not deploying or not deploying.get("release_dir"):
            return
        if current.read_link(self.lc.current_link) != os.path.realpath(deploying["release_dir"]):
            return  # the link never moved (killed before), or moved back: it names what served
        before = deploying.get("previous_dir")
        log.warning("current points at %s (version %s), whose deploy was interrupted before it was ready; "
                    "going back to %s", deploying["release_dir"], deploying.get("version"), before or "nothing")
        self.point_current_at(before)

    def point_dir_at(self, release_dir: str | None) -> bool:
        """assets mode: point the `dir` symlink at release_dir, creating its parent directories; a real file or
        directory there is never replaced (the problem is logged and shown in the status). False when not done."""
        path = self.lc.cfg.dir if self.lc.cfg.mode == "assets" else ""
        if not path or not release_dir:
            return False
        problem = dir_problem(self.lc.cfg)
        if problem is None:
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                if current.read_link(path) != os.path.realpath(release_dir):
                    current.switch_link(path, release_dir)
                    log.info("dir %s now points at %s", path, release_dir)
            except (OSError, current.ReleaseError) as exc:
                problem = "cannot point dir %s at %s: %s" % (path, release_dir, exc)
        if problem is None:
            if self.lc.problem is not None and self.lc.problem == self.lc.dir_trouble:
                self.lc.set_problem(None)  # what was in the way has been moved away
            self.lc.dir_trouble = None
            return True
        self.lc.dir_trouble = problem
        self.lc.set_problem(problem)
        self.lc.host.changed()
        return False

    def forget_dir(self, old_dir: str) -> None:
        """`dir` was configured elsewhere, or removed: remove the old symlink when it still points into our
        releases/ (only a symlink dewy made; anything else stays)."""
        if not old_dir or old_dir == self.lc.cfg.dir or not os.path.islink(old_dir):
            return
        releases = os.path.join(os.path.realpath(self.lc.cfg.workdir), "releases") + os.sep
        if not os.path.realpath(old_dir).startswith(releases):
            return
        try:
            os.unlink(old_dir)
            log.info("removed the old dir symlink %s (dir is now %s)", old_dir, self.lc.cfg.dir or "not set")
        except OSError as exc:
            log.warning("cannot remove the old dir symlink %s: %s", old_dir, exc)

    def point_current_at(self, release_dir: str | None) -> None:
        """Switch `current` to release_dir; remove it when release_dir is None or gone."""
        if release_dir and os.path.isdir(release_dir):
            current.switch_link(self.lc.current_link, release_dir)
            return
        if os.path.islink(self.lc.current_link):
            os.unlink(self.lc.current_link)

    def check_current(self) -> None:
        """Notice, while the app still serves, that its release directory was deleted (called at every poll),
        so the poller redeploys it now rather than at the next crash or restart."""
        if self.lc.starting or self.lc.stopping or self.lc.current_release is None or self.lc.cfg.mode == "assets":
            return
        if self.lc.current_release == self.lc.reported_lost or os.path.isdir(self.lc.current_release):
            return
        self.lc.reported_lost = self.lc.current_release
        self.current_or_lost()

    def current_or_lost(self) -> str | None:
        """The release `current` points at; None (and the poller told to deploy again) when it is gone."""
        release = current.read_link(self.lc.current_link)
        if release is not None or self.lc.current_release is None:
            return release
        lost_version, lost_dir = self.lc.current_version, self.lc.current_release
        error = ("release directory %s of version %s is gone (deleted?); asking the poller to deploy again"
                 % (lost_dir, lost_version))
        self.lc.set_problem(error)
        if not self.lc.serving:
            # Nothing runs it any more: the poller must not take it for running.
            self.lc.current_version = self.lc.current_release = None
        self.lc.host.tell_poller("lost", version=lost_version, release_dir=lost_dir, error=error)
        self.lc.host.changed()
        return None
