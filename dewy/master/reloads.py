"""Whether a reload's app command works: a generation started with a re-read configuration that does not start is
the reload's failure (status `last_error` `reload failed: ...`), and a release is not blamed for an app command that
fails on the running release too (a deploy failing meanwhile, or started before the reload, is retried, not refused).
"""


class ReloadCheck:
    """The reload bookkeeping of one Lifecycle (lc): which configuration each generation started with, and whether
    the last reload's has started one yet."""

    def __init__(self, lc):
        self.lc = lc
        self.epoch = 0  # reloads so far; each generation keeps the one it started with (Generation.config_epoch)
        self.unproven = False  # a reload restarted the app and no generation started with it is ready yet
        self.failed: str | None = None  # why a generation started with the last reload's configuration failed

    def reloaded(self) -> None:
        """The configuration was re-read: the generations started from now on try it."""
        self.epoch += 1
        self.unproven, self.failed = self.lc.cfg.mode != "assets", None

    def ready(self, gen) -> None:
        """gen is ready: when it started with the last reload's configuration, that configuration works."""
        if gen.config_epoch == self.epoch:
            self.unproven, self.failed = False, None

    def start_failed(self, gen, why: str) -> tuple:
        """gen failed to start: (the text to add to a failed deploy's error, whether the deploy is retried and not
        refused); remembers a reload's failure, which problem() then words."""
        stale = gen.config_epoch != self.epoch  # started with the configuration before a reload
        if self.unproven and not stale and gen.reason != "deploy" and gen.rollback_from is None:
            self.failed = "%s did not start with the configuration re-read from %s: %s" % (
                gen.label(), self.lc.cfg.source, why)
        if self.failed:
            return ("; not refused: since the last reload the app does not start on %s either (fix the ini and send "
                    "HUP)" % (self.lc.current_version or "the running release"), True)
        if stale:
            return "; not refused: started with the configuration before the last reload", True
        return "", False

    def problem(self) -> str | None:
        """The status's last_error while the last reload's app command does not start, else None."""
        if not self.failed:
            return None
        serving = self.lc.serving
        return "reload failed: %s%s" % (self.failed, "; generation %d keeps serving" % serving.number if serving else "")

    def show(self) -> None:
        """While the last reload's app command does not start (and dewy is not stopping): the status says so."""
        if self.failed and not self.lc.stopping:
            self.lc.set_problem(self.problem())
