"""A real grpcio server of Dewy's `dewy.RegistryService` (from dewy/registry/proto) for the gRPC tests.

It runs in the test process on 127.0.0.1 (a port the kernel picks), in plaintext or with TLS from a
CA made here, answers Current with whatever the test sets, and records every request it received so
tests can assert what went over the wire. Used by tests/unit/test_registry_grpc.py and
tests/integration/test_grpc_e2e.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dewy.registry.proto import dewy_pb2, dewy_pb2_grpc
from google.protobuf import empty_pb2


class TLSFiles:
    """A test CA and a server certificate it signed for 127.0.0.1 and localhost, written as PEM files."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dewy test CA")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca_pem)


class _Servicer(dewy_pb2_grpc.RegistryServiceServicer):
    def __init__(self, server: "RegistryServer"):
        self.server = server

    def Current(self, request, context):
        server = self.server
        with server.cond:
            server.current_requests.append(request)
            server.cond.notify_all()
            answer, failure, delay = server.answer, server.failure, server.delay
        if delay:
            time.sleep(delay)  # a hung registry: the client's deadline must end the call
        if failure is not None:
            context.abort(*failure)
        if answer is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "nothing published yet")
        return answer

    def Report(self, request, context):
        server = self.server
        with server.cond:
            server.reports.append(request)
            server.cond.notify_all()
        return empty_pb2.Empty()


class RegistryServer:
    """The in-process gRPC registry: set `answer` (via publish()), `failure` or `delay`; read the requests."""

    def __init__(self, tls: TLSFiles | None = None, port: int = 0):
        self.tls = tls
        self.cond = threading.Condition()
        self.current_requests: list = []
        self.reports: list = []
        self.answer = None
        self.failure = None   # (grpc.StatusCode, details) to abort Current with
        self.delay = 0.0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        dewy_pb2_grpc.add_RegistryServiceServicer_to_server(_Servicer(self), self._server)
        if tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:%d" % port)
        else:
            creds = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)])
            self.port = self._server.add_secure_port("127.0.0.1:%d" % port, creds)
        assert self.port, "grpc server could not bind 127.0.0.1"
        self._server.start()

    @property
    def target(self) -> str:
        """host:port for a grpc:// URL."""
        return "127.0.0.1:%d" % self.port

    def url(self, query: str = "") -> str:
        """grpc://127.0.0.1:port plus query: plaintext servers get no-tls=true, TLS ones ca=<the test CA>."""
        parts = ["no-tls=true"] if self.tls is None else ["ca=%s" % self.tls.ca_path]
        if query:
            parts.append(query)
        return "grpc://%s?%s" % (self.target, "&".join(parts))

    def publish(self, tag: str, artifact_url: str, response_id: str | None = None, created_at: bool = True) -> str:
        """Make Current answer tag/artifact_url from now on; returns the response id it carries."""
        response = dewy_pb2.CurrentResponse(id=response_id or uuid.uuid4().hex, tag=tag, artifact_url=artifact_url)
        if created_at:
            response.created_at.GetCurrentTime()
        with self.cond:
            self.answer, self.failure, self.delay = response, None, 0.0
        return response.id

    def reset(self) -> None:
        """Forget requests and answers (between tests sharing the server)."""
        with self.cond:
            self.current_requests.clear()
            self.reports.clear()
            self.answer, self.failure, self.delay = None, None, 0.0

    def wait_requests(self, count: int, timeout: float = 30.0) -> None:
        """Wait until Current was called at least count times in all; AssertionError otherwise."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.current_requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("only %d Current calls within %.0fs, expected %d"
                                         % (len(self.current_requests), timeout, count))
                self.cond.wait(left)

    def wait_report(self, predicate, timeout: float = 30.0):
        """The first Report request satisfying predicate, waiting up to timeout; AssertionError if none came."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for report in self.reports:
                    if predicate(report):
                        return report
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no matching Report within %.0fs; got: %s" % (
                        timeout, [(r.tag, r.command, r.err if r.HasField("err") else None) for r in self.reports]))
                self.cond.wait(left)

    def stop(self) -> None:
        """Stop serving now and wait until the server's threads are done."""
        self._server.stop(grace=None).wait()


# --- fixtures (import them into a test module: `from grpc_registry_server import grpc_plain, ...`) ---

@pytest.fixture(scope="session")
def grpc_tls_files(tmp_path_factory) -> TLSFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, made once per test run."""
    return TLSFiles(tmp_path_factory.mktemp("grpc-tls"))


@pytest.fixture(scope="session")
def _grpc_plain_server():
    server = RegistryServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _grpc_tls_server(grpc_tls_files):
    server = RegistryServer(tls=grpc_tls_files)
    yield server
    server.stop()


@pytest.fixture
def grpc_plain(_grpc_plain_server) -> RegistryServer:
    """The session's plaintext gRPC registry, with nothing published and no requests recorded."""
    _grpc_plain_server.reset()
    return _grpc_plain_server


@pytest.fixture
def grpc_tls(_grpc_tls_server) -> RegistryServer:
    """The session's TLS gRPC registry (certificate from grpc_tls_files' CA), reset."""
    _grpc_tls_server.reset()
    return _grpc_tls_server
