"""A TLS terminator on 127.0.0.1 in front of a plaintext server (what stunnel or a cloud Redis's TLS endpoint
does): lets the tests speak `rediss://` to the real valkey-server, whose bundled binary has no TLS of its own."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class TLSProxy:
    """Accept TLS on a free 127.0.0.1 port with the certificate of `tls` (tests' TLSFiles); forward each
    connection's plaintext to `target` (host, port). A context manager; `port` once entered."""

    def __init__(self, tls, target: tuple, directory: Path):
        cert, key = Path(directory) / "proxy-cert.pem", Path(directory) / "proxy-key.pem"
        cert.write_bytes(tls.cert_pem)
        key.write_bytes(tls.key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        self.threads: list = []
        self.handshake_errors: list = []
        self._stop = threading.Event()

    def __enter__(self) -> "TLSProxy":
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for sock in [self.listener] + list(self.sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept() or recv() on it
            except OSError:
                pass
            sock.close()
        for thread in self.threads:
            thread.join(5)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(raw)
            try:
                client = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))  # a client that refused our certificate
                raw.close()
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
