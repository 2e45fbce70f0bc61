"""https:// / loopback http:// artifacts against a real HTTP server on 127.0.0.1 (threads, in-process)."""

import hashlib
import http.server
import io
import os
import threading

import pytest

from dewy import artifact
from dewy.artifact import ArtifactError

BODY = os.urandom(3 * (1 << 20) + 12345)  # a few chunks and a partial one


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves BODY at /app.tar.gz; `cut_after` bytes into the first request it drops the connection."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append({"path": self.path, "range": self.headers.get("Range"),
                                "if_range": self.headers.get("If-Range")})
        if not self.path.startswith("/app.tar.gz"):
            self.send_error(404)
            return
        start = 0
        ranged = self.headers.get("Range")
        if ranged and server.ranges:
            start = int(ranged.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(BODY) - 1, len(BODY)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BODY) - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if server.cut_after and len(server.requests) == 1:
            self.wfile.write(BODY[start:start + server.cut_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(BODY[start:])


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.requests, srv.cut_after, srv.ranges = [], 0, True
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def url(srv, path="/app.tar.gz"):
    return "http://127.0.0.1:%d%s" % (srv.server_address[1], path)


def test_streams_the_whole_body(server):
    out = io.BytesIO()
    artifact.from_url(url(server)).fetch(out)
    assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(BODY).hexdigest()
    assert [r["range"] for r in server.requests] == [None]


def test_a_broken_download_resumes_with_a_range_request(server):
    server.cut_after = 1 << 20
    out = io.BytesIO()
    artifact.from_url(url(server)).fetch(out)
    assert out.getvalue() == BODY
    assert len(server.requests) == 2
    assert server.requests[1]["range"] == "bytes=%d-" % (1 << 20)
    assert server.requests[1]["if_range"] == '"v1"'  # never splice two different files


def test_a_server_without_ranges_fails_instead_of_starting_over(server):
    server.cut_after, server.ranges = 1 << 20, False
    with pytest.raises(ArtifactError, match="cannot resume"):
        artifact.from_url(url(server)).fetch(io.BytesIO())


def test_http_error_is_one_line_without_the_signature(server):
    with pytest.raises(ArtifactError) as err:
        artifact.from_url(url(server, "/missing?X-Amz-Signature=s3cr3t&X-Amz-Expires=60")).fetch(io.BytesIO())
    assert "HTTP 404" in str(err.value) and "s3cr3t" not in str(err.value) and "\n" not in str(err.value)


def test_connection_refused_is_an_artifact_error(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(ArtifactError, match="cannot download"):
        artifact.from_url("http://127.0.0.1:%d/app.tar.gz?sig=abc" % port).fetch(io.BytesIO())


@pytest.mark.parametrize("bad", ["http://example.com/app.tar.gz", "http://10.0.0.1/a", "https:///nohost"])
def test_plaintext_only_to_loopback(bad):
    with pytest.raises(ValueError):
        artifact.validate_url(bad)


@pytest.mark.parametrize("good", ["https://example.com/a.tgz?X-Amz-Signature=x&anything=1", "http://localhost:8/a",
                                  "http://[::1]:8/a", "http://127.0.0.2/a"])
def test_https_and_loopback_http_accepted(good):
    artifact.validate_url(good)
