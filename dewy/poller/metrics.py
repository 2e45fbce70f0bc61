"""Prometheus metrics, served by the poller (`metrics = 127.0.0.1:9464`; off by default).

The poller serves them from an HTTP thread of its own (prometheus-client's, imported only when the
setting is on), so the master stays lean. Metrics (all `dewy_`):

- `dewy_deploys_total{result}`               deploy attempts by result: deployed, refused (the release is
                                             bad), failed (it did not start, or download, disk or hook trouble:
                                             retried), rolled_back
- `dewy_deploy_duration_seconds`             histogram, release seen by a poll -> the new version serving
- `dewy_app_restarts_total{reason}`          app generations started, by reason: initial, deploy, signal
                                             (USR1 restart), crash (respawn after an exit), health (failed
                                             health checks), rollback
- `dewy_rollbacks_total`                     crash-looping releases rolled back
- `dewy_release_info{version}`               the version serving now (info metric: value 1)
- `dewy_registry_requests_total{result}`     polls by answer: ok (also "nothing deployable"), not_modified
                                             (HTTP 304), waiting (artifact not yet published), error
- `dewy_last_successful_poll_timestamp_seconds`  Unix time of the last poll the registry answered
- `dewy_downloaded_bytes_total`              artifact bytes downloaded

Beside them, Dewy's own names (telemetry/telemetry.go through OpenTelemetry's Prometheus exporter), so a Dewy
dashboard keeps working: `dewy_deployments_total{command}` (successful deploys; command = server|assets),
`dewy_deployment_errors_total{command}` (deploys that failed: refused or failed), `dewy_deployment_duration_seconds
{command}` (histogram, Dewy's buckets) and `dewy_server_restarts_total{reason}` (deploy, signal: the restarts Dewy
counts). With `otlp-endpoint` the same events also go to dewy.poller.otel (Dewy's `dewy.*` OTel names).

Without the settings, Metrics is a do-nothing object with the same methods.
"""

import logging
import time

from dewy.values import parse_address

log = logging.getLogger("dewy.poller")

DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
# The master's spawn reasons (dewy.master.lifecycle) -> the restart reasons shown.
RESTART_REASONS = {"initial": "initial", "deploy": "deploy", "restart": "signal", "respawn": "crash",
                   "rollback": "rollback", "health": "health"}
DEWY_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600)  # Dewy's dewy.deployment.duration boundaries
DEWY_RESTART_REASONS = ("deploy", "signal")  # what Dewy's dewy.server.restarts.total counts


class Metrics:
    """dewy's metrics; every method is cheap and never raises. start(address) serves them over HTTP."""

    def __init__(self):
        self.address = None
        self.server = None
        self.registry = None
        self.command = "server"  # Dewy's `command` label: the mode
        self.otel = None  # a dewy.poller.otel.Export with `otlp-endpoint`, fed the same events

    @property
    def enabled(self) -> bool:
        """Whether the metrics are being served."""
        return self.server is not None

    def configure(self, config) -> None:
        """Serve (or stop serving) what config asks: `metrics` over HTTP, `otlp-endpoint` by OTLP/gRPC."""
        self.start(config.metrics, command=config.mode)
        endpoint = getattr(config, "otlp_endpoint", "")
        insecure = getattr(config, "otlp_insecure", "false") == "true"
        wanted = (endpoint, insecure) if endpoint else None
        current = (self.otel.endpoint, self.otel.insecure) if self.otel is not None else None
        if wanted == current:
            return
        self.stop_otel()
        if wanted:
            from dewy import audit
            from dewy.poller import otel

            problem = otel.sdk_missing()
            if problem:
                log.error("%s", problem)
                return
            try:
                self.otel = otel.Export(endpoint, insecure, audit.hostname(getattr(config, "host_id", "")))
            except Exception as exc:  # noqa: BLE001 - telemetry must never stop deploys
                log.error("cannot export to %s by OTLP: %s", endpoint, exc)

    def stop_otel(self) -> None:
        """Flush and stop the OTLP export, if any."""
        if self.otel is not None:
            self.otel.shutdown()
            self.otel = None

    def audited(self, entry: dict) -> None:
        """An audit record was written (deploy, refusal, failure, rollback): an OTel log record with its fields."""
        if self.otel is not None:
            try:
                self.otel.event(entry)
            except Exception as exc:  # noqa: BLE001 - telemetry must never fail a deploy
                log.warning("cannot hand the %s event to OpenTelemetry: %s", entry.get("result"), exc)

    def start(self, address: str, command: str = "server") -> None:
        """Serve the metrics on address (HOST:PORT); an address in use is logged, never fatal."""
        self.command = command
        if address == self.address and self.server is not None:
            return
        self.stop()
        if not address:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

        host, port = parse_address(address)
        registry = CollectorRegistry()
        self.deploys = Counter("dewy_deploys", "Deploy attempts by result.", ["result"], registry=registry)
        self.duration = Histogram("dewy_deploy_duration_seconds", "From the poll that saw a release to it serving.",
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.restarts = Counter("dewy_app_restarts", "App generations started, by reason.", ["reason"],
                                registry=registry)
        self.rollbacks = Counter("dewy_rollbacks", "Releases rolled back after crash-looping.", registry=registry)
        self.release = Info("dewy_release", "The version serving now.", registry=registry)
        self.requests = Counter("dewy_registry_requests", "Registry polls by answer.", ["result"], registry=registry)
        self.last_poll = Gauge("dewy_last_successful_poll_timestamp_seconds",
                               "Unix time of the last poll the registry answered.", registry=registry)
        self.bytes = Counter("dewy_downloaded_bytes", "Artifact bytes downloaded.", registry=registry)
        # Dewy's names and labels (its OTel instruments as its Prometheus exporter shows them).
        self.dewy_deployments = Counter("dewy_deployments", "Total number of deployments", ["command"],
                                        registry=registry)
        self.dewy_errors = Counter("dewy_deployment_errors", "Total number of deployment errors", ["command"],
                                   registry=registry)
        self.dewy_duration = Histogram("dewy_deployment_duration_seconds", "Duration of deployments", ["command"],
                                       buckets=DEWY_BUCKETS, registry=registry)
        self.dewy_restarts = Counter("dewy_server_restarts", "Total number of managed-server restarts, keyed by "
                                     "reason (deploy|signal)", ["reason"], registry=registry)
        for result in ("deployed", "refused", "failed", "rolled_back"):
            self.deploys.labels(result)  # present at 0 from the start: rate() needs a first sample
        for result in ("ok", "not_modified", "waiting", "error"):
            self.requests.labels(result)
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=registry)
            from dewy.poller.trigger import limit_server  # half-sent requests cannot hold threads and fds

            limit_server(self.server)
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s", address, exc)
            return
        self.registry, self.address = registry, address
        log.info("serving Prometheus metrics on http://%s/metrics", address)

    def stop(self, otel: bool = False) -> None:
        """Stop serving (a reload moved or removed the address); otel: the OTLP export too (the poller exits)."""
        if otel:
            self.stop_otel()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.server = self.registry = self.address = None

    # --- what happened -------------------------------------------------------------------------

    def deployed(self, version: str, seconds: float) -> None:
        """A deploy succeeded after `seconds` since its release was seen."""
        if self.enabled:
            self.deploys.labels("deployed").inc()
            self.duration.observe(seconds)
            self.dewy_deployments.labels(self.command).inc()
            self.dewy_duration.labels(self.command).observe(seconds)
            self.serving(version)
        if self.otel is not None:
            self.otel.deployed(self.command, seconds)

    def deploy_result(self, result: str) -> None:
        """A deploy attempt ended otherwise: refused, failed."""
        if self.enabled:
            self.deploys.labels(result).inc()
            self.dewy_errors.labels(self.command).inc()
        if self.otel is not None:
            self.otel.deploy_error(self.command)

    def rolled_back(self, to_version: str | None) -> None:
        """The master rolled a crash-looping release back."""
        if self.enabled:
            self.deploys.labels("rolled_back").inc()
            self.rollbacks.inc()
            self.serving(to_version)

    def serving(self, version: str | None) -> None:
        """The version serving now (None: nothing)."""
        if self.enabled:
            self.release.info({"version": version or ""})

    def spawned(self, reason: str) -> None:
        """The master started an app generation for reason (its spawn reason)."""
        shown = RESTART_REASONS.get(reason, reason)
        if self.enabled:
            self.restarts.labels(shown).inc()
            if shown in DEWY_RESTART_REASONS:
                self.dewy_restarts.labels(shown).inc()
        if self.otel is not None and shown in DEWY_RESTART_REASONS:
            self.otel.server_restart(shown)

    def polled(self, result: str) -> None:
        """One poll's answer: ok, not_modified, waiting or error."""
        if self.enabled:
            self.requests.labels(result).inc()
            if result != "error":
                self.last_poll.set(time.time())

    def downloaded(self, count: int) -> None:
        """count artifact bytes arrived."""
        if self.enabled and count:
            self.bytes.inc(count)
