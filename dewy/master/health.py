"""The lifecycle's HTTP checks: `ready = http:` (the starting generation) and `health` (the serving one).

When to GET, what an answer means (a 2xx makes the starting generation ready; health-failures failed
checks in a row restart the serving one, or count as a crash on probation), and when to ask again. The
GETs themselves are the Host's (apps.AppHost -> httpprobe); the deadlines are in the lifecycle's table
(Generation.probe_at).
"""

import logging

from .generation import Generation
from .httpprobe import OK, OTHER

log = logging.getLogger("dewy.master")

PROBE_RETRY = 0.2  # ready = http: a failed GET is asked again this much later
PROBE_TIMEOUT = 5.0  # ready = http: the longest one GET may take (within the readiness timeout)
OTHER_RETRY = 0.02  # a GET accepted by another generation: ask again this soon


class HealthChecks:
    """The readiness and health GETs of one Lifecycle (lc)."""

    def __init__(self, lc):
        self.lc = lc

    def start_probe(self, gen: Generation, now: float) -> None:
        """Time to GET the readiness path (starting gen) or the health path (serving gen)."""
        gen.probe_at = None
        if gen is self.lc.starting and gen.ready_kind == "http":
            left = (gen.ready_deadline or now) - now
            gen.probing = True
            self.lc.host.probe(gen, gen.ready_path, max(0.05, min(PROBE_TIMEOUT, left)))
        elif gen is self.lc.serving and self.lc.cfg.health:
            if self.lc.starting is not None:
                # A new generation is on its way (deploy, restart): check the one that serves after it.
                gen.probe_at = now + self.lc.cfg.health_interval
                return
            gen.probing = True
            self.lc.host.probe(gen, self.lc.cfg.health, self.lc.cfg.health_interval)

    def probe_done(self, gen: Generation, outcome: str, detail: str) -> None:
        """A GET of start_probe came back: ok / failed / other (accepted by another generation: ask again)."""
        gen.probing = False
        log.debug("%s: %s (%s)", gen.label(), detail, outcome, extra=gen.log_fields())  # `other`: ask again
        if self.lc.stopping:
            return
        now = self.lc.clock()
        if outcome == OTHER:
            if gen is self.lc.starting or gen is self.lc.serving:
                gen.probe_at = now + OTHER_RETRY
            if gen is self.lc.starting and gen.ready_kind == "http" and not gen.probe_answered:
                # a refusal then says the answers were another's, or unattributed, unless it answered itself
                gen.probe_detail = detail
            return
        if gen is self.lc.starting and gen.ready_kind == "http":
            gen.probe_detail, gen.probe_answered = detail, True
            if outcome == OK:
                self.lc.on_ready(gen)
            else:
                gen.probe_at = now + PROBE_RETRY
        elif gen is self.lc.serving and self.lc.cfg.health:
            if outcome == OK:
                if gen.health_failures:
                    log.info("%s is healthy again: %s", gen.label(), detail, extra=gen.log_fields())
                gen.health_failures = 0
            else:
                gen.health_failures += 1
                log.warning("health check %d/%d of %s failed: %s", gen.health_failures, self.lc.cfg.health_failures,
                            gen.label(), detail, extra=gen.log_fields())
                if gen.health_failures >= self.lc.cfg.health_failures:
                    self.unhealthy(gen, detail)
                    return
            gen.probe_at = now + self.lc.cfg.health_interval

    def unhealthy(self, gen: Generation, detail: str) -> None:
        """The serving generation failed health-failures checks in a row: start a new one (it retires once the
        new one is ready); on probation this counts as a crash, and the third one rolls the release back."""
        gen.health_failures, gen.probe_at = 0, None
        self.lc.set_problem("%s failed %d health checks in a row (%s); restarting it" % (
            gen.label(), self.lc.cfg.health_failures, detail))
        if self.lc.rollbacks.count_crash(gen):
            return
        self.lc.restart(reason="health")
        self.lc.host.changed()

    def arm_health(self, gen: Generation) -> None:
        """Schedule the first health check of a generation that now serves."""
        gen.health_failures = 0
        gen.probe_at = self.lc.clock() + self.lc.cfg.health_interval if self.lc.cfg.health else None
