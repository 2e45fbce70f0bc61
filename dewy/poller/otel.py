"""OpenTelemetry export over OTLP/gRPC (`otlp-endpoint`; Dewy's --otlp-endpoint, --otlp-insecure), from the poller.

Dewy's instruments under Dewy's names (telemetry/telemetry.go), so a Dewy dashboard in an OTel backend keeps
working: `dewy.deployments.total` and `dewy.deployment.errors.total` ({deployment} / {error}, attribute
`command` = server|assets), `dewy.deployment.duration` (s, Dewy's bucket boundaries, `command`) and
`dewy.server.restarts.total` ({restart}, attribute `reason` = deploy|signal); the scope is Dewy's
(`github.com/linyows/dewy`), the resource `service.name=dewy`, `service.version`, `host.name`. Metrics go out
every 15 s as Dewy's, or every OTEL_METRIC_EXPORT_INTERVAL milliseconds when that is set.

Besides metrics, every audit record (deploy, refusal, failure, rollback) is sent as an OTel log record: the
body says what happened, the attributes are the audit record's fields, event name `dewy.<result>`.

TLS unless `otlp-insecure` (system roots, or GRPC_DEFAULT_SSL_ROOTS_FILE_PATH). The SDK is the `[otel]` extra
(opentelemetry-sdk, opentelemetry-exporter-otlp-proto-grpc): imported here only, when the setting is on, so
neither the master nor a poller without the setting loads it. Export runs on the SDK's own threads; a receiver
that is down costs log lines from the SDK, never a deploy.
"""

from __future__ import annotations

import logging
import os
import time

from dewy import __version__

log = logging.getLogger("dewy.poller")

DEWY_INTERVAL_MS = 15000  # Dewy's fixed periodic reader interval
DEWY_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600)
SCOPE = "github.com/linyows/dewy"  # Dewy's meter name: the instrumentation scope a Dewy dashboard filters on
ERROR_RESULTS = ("refused", "failed", "rolled-back")


def interval_ms() -> float:
    """OTEL_METRIC_EXPORT_INTERVAL (ms) when set to a positive number, else Dewy's 15 s."""
    text = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    try:
        value = float(text)
    except ValueError:
        return DEWY_INTERVAL_MS
    return value if value > 0 else DEWY_INTERVAL_MS


def sdk_missing() -> str | None:
    """Why the export cannot run here (the [otel] extra is not installed: dewy.extras says how), or None."""
    from dewy import extras

    try:
        extras.require("otel", "otlp-endpoint")
    except ValueError as exc:
        return str(exc)
    return None


class Export:
    """The meter and logger providers exporting to one OTLP endpoint; shutdown() flushes and stops them."""

    def __init__(self, endpoint: str, insecure: bool, host: str):
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import Histogram, MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource

        self.endpoint = endpoint
        self.insecure = insecure
        self.severity = {"deployed": SeverityNumber.INFO, "rolled-back": SeverityNumber.WARN}
        self.error_severity = SeverityNumber.ERROR
        resource = Resource.create({"service.name": "dewy", "service.version": __version__, "host.name": host})
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=insecure),
                                               export_interval_millis=interval_ms())
        buckets = View(instrument_type=Histogram, instrument_name="dewy.deployment.duration",
                       aggregation=ExplicitBucketHistogramAggregation(DEWY_BUCKETS))
        # Our own providers, not the global ones: nothing else in the poller reports through OTel.
        self.meters = MeterProvider(resource=resource, metric_readers=[reader], views=[buckets])
        meter = self.meters.get_meter(SCOPE, __version__)
        self.deployments = meter.create_counter("dewy.deployments.total", unit="{deployment}",
                                                description="Total number of deployments")
        self.errors = meter.create_counter("dewy.deployment.errors.total", unit="{error}",
                                           description="Total number of deployment errors")
        self.duration = meter.create_histogram("dewy.deployment.duration", unit="s",
                                               description="Duration of deployments")
        self.restarts = meter.create_counter("dewy.server.restarts.total", unit="{restart}",
                                             description="Total number of managed-server restarts, keyed by reason "
                                                         "(deploy|signal)")
        self.logs = LoggerProvider(resource=resource)
        self.logs.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=endpoint, insecure=insecure), schedule_delay_millis=1000))
        self.logger = self.logs.get_logger(SCOPE, __version__)
        log.info("exporting OpenTelemetry metrics and deploy events to %s (OTLP/gRPC, %s, every %gs)", endpoint,
                 "plaintext" if insecure else "TLS", interval_ms() / 1000)

    def deployed(self, command: str, seconds: float) -> None:
        """A deploy succeeded (Dewy: dewy.deployments.total + dewy.deployment.duration)."""
        self.deployments.add(1, {"command": command})
        self.duration.record(seconds, {"command": command})

    def deploy_error(self, command: str) -> None:
        """A deploy failed (Dewy: dewy.deployment.errors.total)."""
        self.errors.add(1, {"command": command})

    def server_restart(self, reason: str) -> None:
        """The app was restarted by a deploy or a signal (Dewy: dewy.server.restarts.total)."""
        self.restarts.add(1, {"reason": reason})

    def event(self, entry: dict) -> None:
        """One audit record as a log record: its fields as attributes, a one-line body."""
        result = str(entry.get("result") or "event")
        attributes = {str(k): v if isinstance(v, (str, bool, int, float)) else str(v)
                      for k, v in entry.items() if v is not None}
        body = "%s %s%s" % (result, entry.get("version") or "", ": %s" % entry["error"] if entry.get("error") else "")
        severity = self.severity.get(result, self.error_severity if result in ERROR_RESULTS else None)
        self.logger.emit(timestamp=time.time_ns(), body=body.strip(), attributes=attributes,
                         severity_number=severity, severity_text=severity.name if severity else None,
                         event_name="dewy.%s" % result)

    def shutdown(self) -> None:
        """Flush what is pending (bounded by the SDK's export timeouts) and stop the export threads."""
        for provider in (self.logs, self.meters):
            try:
                provider.shutdown()
            except Exception as exc:  # noqa: BLE001 - a receiver that is gone must not fail the poller's exit
                log.warning("OpenTelemetry shutdown: %s", exc)
