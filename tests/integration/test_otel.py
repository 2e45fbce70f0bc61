"""OpenTelemetry export from a real dewy-master's poller to a local OTLP/gRPC receiver (opentelemetry-proto
services on grpcio) that decodes the protobuf: Dewy's metric names and attributes, deploy events as log records,
TLS unless otlp-insecure, OTEL_METRIC_EXPORT_INTERVAL honoured."""

from __future__ import annotations

import pytest

from grpc_registry_server import TLSFiles
from helpers import wait_until
from otlp_receiver import Receiver


def last_value(receiver, name, **attrs):
    """The newest cumulative value of metric name with these attributes (None when none arrived)."""
    values = [p[3] for p in receiver.points(name) if all(p[2].get(k) == v for k, v in attrs.items())]
    return values[-1] if values else None


@pytest.mark.timeout(120)
def test_metrics_and_deploy_events_reach_an_otlp_receiver(make_master, registry):
    with Receiver() as receiver:
        registry.publish("1.0.0")
        master = make_master(env={"OTEL_METRIC_EXPORT_INTERVAL": "300"},  # ms; Dewy's 15 s otherwise
                             **{"otlp-endpoint": receiver.endpoint, "otlp-insecure": "true"})
        master.start(wait_version="1.0.0")
        master.deploy("1.1.0")
        registry.publish("1.2.0", behaviour="crash-at-start")
        wait_until(lambda: last_value(receiver, "dewy.deployments.total", command="server") == 2
                   and last_value(receiver, "dewy.deployment.errors.total", command="server") == 1, 30,
                   "Dewy's deployment counters", lambda: receiver.points("dewy.deployments.total"))
        resource, scope, attrs, value, unit = receiver.points("dewy.deployments.total")[-1]
        assert (scope, unit, attrs) == ("github.com/linyows/dewy", "{deployment}", {"command": "server"})
        assert resource["service.name"] == "dewy" and resource["host.name"]
        assert last_value(receiver, "dewy.deployment.duration", command="server") == 2  # histogram count
        assert last_value(receiver, "dewy.server.restarts.total", reason="deploy") >= 2

        records = wait_until(lambda: [r for r in receiver.log_records() if r[3].get("version") == "1.2.0"], 30,
                             "the failed deploy as a log record", receiver.log_records)
        deployed = [r for r in receiver.log_records() if r[1] == "dewy.deployed"]
        assert {r[3]["version"] for r in deployed} == {"1.0.0", "1.1.0"}, deployed
        one = [r for r in deployed if r[3]["version"] == "1.1.0"][0]
        assert one[3]["previous_version"] == "1.0.0" and one[3]["result"] == "deployed" and one[3]["mode"] == "server"
        assert one[3]["host"] and one[4] == "INFO" and one[2].startswith("deployed 1.1.0")
        assert records[0][1] == "dewy.failed" and records[0][4] == "ERROR" and "1.2.0" in records[0][2]
        assert master.stop() == 0


@pytest.mark.timeout(120)
def test_tls_unless_insecure(make_master, registry, tmp_path):
    """Without otlp-insecure the export speaks TLS (system roots; here the test CA through grpc's
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH): a TLS receiver gets the metrics."""
    tls = TLSFiles(tmp_path)
    with Receiver(tls=tls) as receiver:
        registry.publish("1.0.0")
        master = make_master(env={"OTEL_METRIC_EXPORT_INTERVAL": "300",
                                  "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(tls.ca_path)},
                             **{"otlp-endpoint": "localhost:%d" % receiver.port})
        master.start(wait_version="1.0.0")
        wait_until(lambda: last_value(receiver, "dewy.deployments.total", command="server") == 1, 30,
                   "the deploy counted over TLS", master.details)
        assert master.stop() == 0
