"""A local OTLP/gRPC receiver for tests: the collector's MetricsService and LogsService (opentelemetry-proto),
served by grpcio on 127.0.0.1, keeping every decoded Export request. Plaintext, or TLS with tests' TLSFiles."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc


def _value(any_value):
    """An AnyValue as Python."""
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(key_values) -> dict:
    """KeyValue list -> dict."""
    return {kv.key: _value(kv.value) for kv in key_values}


class Receiver:
    """Collects what dewy exports: `metric_requests`, `log_requests` (decoded protobuf messages)."""

    def __init__(self, tls=None):
        self.cond = threading.Condition()
        self.metric_requests: list = []
        self.log_requests: list = []
        receiver = self

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the service's naming
                with receiver.cond:
                    receiver.metric_requests.append(request)
                    receiver.cond.notify_all()
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                with receiver.cond:
                    receiver.log_requests.append(request)
                    receiver.cond.notify_all()
                return logs_service_pb2.ExportLogsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            creds = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    @property
    def endpoint(self) -> str:
        return "127.0.0.1:%d" % self.port

    def points(self, name: str) -> list:
        """(resource attributes, scope name, point attributes, value) of every data point of metric `name`;
        a sum's value is its as_int/as_double, a histogram's its count."""
        found = []
        with self.cond:
            requests = list(self.metric_requests)
        for request in requests:
            for rm in request.resource_metrics:
                resource = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name != name:
                            continue
                        data = getattr(metric, metric.WhichOneof("data"))
                        for point in data.data_points:
                            value = point.count if metric.WhichOneof("data") == "histogram" else (
                                point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)
                            found.append((resource, sm.scope.name, attributes(point.attributes), value,
                                          metric.unit))
        return found

    def log_records(self) -> list:
        """(resource attributes, event name, body, attributes, severity text) of every log record."""
        found = []
        with self.cond:
            requests = list(self.log_requests)
        for request in requests:
            for rl in request.resource_logs:
                resource = attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        found.append((resource, record.event_name, _value(record.body), attributes(record.attributes),
                                      record.severity_text))
        return found

    def close(self) -> None:
        self.server.stop(0).wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
