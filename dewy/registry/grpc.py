"""`grpc://host:port` registry: a server speaking Dewy's `dewy.RegistryService` names the release.

Wire-compatible with Dewy (github.com/linyows/dewy, registry/grpc.go and registry/dewy.proto; our copy
and its generated stubs live in dewy/registry/proto/, see the README there for the protoc command):

- `Current(CurrentRequest{arch, os, arifact_name})` -> `CurrentResponse{id, tag, artifact_url, created_at}`:
  `os`/`arch` carry Go's GOOS/GOARCH names (linux, darwin, amd64, arm64), `arifact_name` (sic: the
  wire contract) is set only with `?artifact=`. The server decides what to deploy; dewy checks that the
  tag is a version (semver, or `?calver=`), of this host's slot, and not refused here.
- `Report(ReportRequest{id, tag, command, err})` after every deploy attempt: `command` is the mode
  (server / assets), `err` is set when the deploy failed (Dewy itself reports successes only).

Query keys: `no-tls=true` (plaintext; the default is TLS with the system's CA roots, which Dewy never
got working), `ca=/abs/ca.pem` (trust a private CA instead), `artifact=NAME`, `calver=FMT`.
Every call has a deadline. grpcio and the stubs are imported only when the registry is built, so the
master can validate a grpc:// URL without loading them.
"""

import logging
import os
import platform
import posixpath
import ssl
import urllib.parse
from typing import Iterable

from dewy import artifact as artifact_pkg
from dewy import urls, versions
from dewy.log import redact, redact_text
from dewy.registry.base import NothingDeployable, Registry, RegistryError, Release, plain_name, shown

MAX_MESSAGE = 1 << 20  # bytes: the most of one gRPC answer dewy reads (grpc.max_receive_message_length)
log = logging.getLogger("dewy.registry")

DEADLINE = 10.0  # seconds for each RPC: a hung registry must not hang the poller
_MAX_IDS = 32    # CurrentResponse ids remembered (per tag) for the Report of that release
_MAX_DETAIL = 300

# Go's GOARCH for what platform.machine() says (lowercased); anything else passes through lowercased.
_GO_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "x64": "amd64",
    "aarch64": "arm64", "arm64": "arm64", "armv8l": "arm64",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386", "x86": "386",
    "armv6l": "arm", "armv7l": "arm", "armv7": "arm", "arm": "arm",
    "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64",
    "mips64": "mips64", "loongarch64": "loong64",
}

# System CA bundles, tried in order when ssl's compiled-in default file is missing. grpcio would
# otherwise fall back to the roots bundled in its wheel, which the host's administrator cannot extend.
_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",   # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",     # RHEL, Fedora, Amazon Linux
    "/etc/ssl/ca-bundle.pem",               # SUSE
    "/etc/ssl/cert.pem",                    # macOS, BSDs
)


def go_os(system: str | None = None) -> str:
    """This host's OS in Go's GOOS spelling (linux, darwin, windows, freebsd...)."""
    return (system if system is not None else platform.system()).lower()


def go_arch(machine: str | None = None) -> str:
    """This host's CPU architecture in Go's GOARCH spelling (amd64, arm64, 386, arm...)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    return _GO_ARCH.get(machine, machine)


def system_roots() -> bytes | None:
    """The PEM bytes of the system's CA bundle ($SSL_CERT_FILE first), or None to let grpcio choose."""
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get(paths.openssl_cafile_env or "SSL_CERT_FILE"), paths.cafile,
                  paths.openssl_cafile, *_CA_BUNDLES]
    for path in candidates:
        if path and os.path.isfile(path):
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except OSError:
                continue
    return None


def _read_ca(path: str, scheme: str = "grpc") -> bytes:
    """The PEM bytes of the ?ca= file; ValueError naming what is wrong with it."""
    if not os.path.isabs(path):
        raise ValueError('bad value "%s" for query key "ca" of %s://; allowed: an absolute path to a PEM '
                         'CA certificate file' % (path, scheme))
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        raise ValueError('cannot read the CA file "%s" (query key "ca" of %s://): %s'
                         % (path, scheme, exc.strerror or exc)) from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError('the CA file "%s" (query key "ca" of %s://) holds no PEM certificate '
                         '("-----BEGIN CERTIFICATE-----")' % (path, scheme))
    return data


def _one_line(text: str) -> str:
    """text on one line, shortened: gRPC's details can span lines and quote whole handshakes."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 3] + "..."


class GRPCRegistry(Registry):
    """A registry that asks a Dewy-compatible gRPC server which release to run and reports deploys to it."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a missing host, a path, credentials in the URL or a bad query value."""
        super().validate(parsed)
        if not parsed.hostname:
            raise ValueError("grpc:// registry needs a host, e.g. grpc://registry.example.com:9000")
        if "@" in parsed.netloc:
            raise ValueError("grpc:// registry URL takes no user or password (the server is trusted by TLS)")
        if parsed.path not in ("", "/"):
            raise ValueError("grpc:// registry URL takes only host:port, no path (got %r)" % parsed.path)
        try:
            parsed.port
        except ValueError:
            raise ValueError("grpc:// registry has a bad port in %r; expected host:port" % parsed.netloc) from None
        no_tls = urls.query_bool(parsed, "no-tls")
        if "ca" in parsed.query:
            if no_tls:
                raise ValueError('query key "ca" of grpc:// is for TLS; it cannot go with no-tls=true')
            _read_ca(parsed.query["ca"])

    def __init__(self, url: str, cache=None, slot: str = ""):
        super().__init__(url, cache=cache, slot=slot)
        self.target = self.parsed.netloc
        self.no_tls = urls.query_bool(self.parsed, "no-tls")
        self.ca = self.parsed.query.get("ca") or None
        self.deadline = DEADLINE
        self.os, self.arch = go_os(), go_arch()
        self._ids = {}   # tag -> the CurrentResponse id that named it (sent back in Report)
        self._channel = None
        self._stub = None

    # --- the connection -------------------------------------------------------------------------

    def _connect(self):
        """The stub over one long-lived channel (created on first use; gRPC reconnects by itself)."""
        if self._stub is not None:
            return self._stub
        # grpc's C core logs each failed connection attempt (TLS handshakes...) to stderr at INFO; our
        # RegistryError already carries the cause, and the poller logs an outage once. Effective only
        # before grpc's first import, which in the poller is this one; an operator's setting wins.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        import grpc

        from dewy.registry.proto import dewy_pb2_grpc

        # Short reconnect backoff: after an outage the next poll should find the server, not a
        # channel still waiting out grpc's default 120 s backoff.
        # A registry's answers are a few hundred bytes: a hostile one cannot make us buffer more than the cap.
        options = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.min_reconnect_backoff_ms", 500),
                   ("grpc.max_reconnect_backoff_ms", 5000), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        if self.no_tls:
            if not getattr(self, "_warned_plaintext", False):  # once per registry, not at every reconnect
                log.warning("registry grpc://%s: no-tls=true: plaintext, the registry is NOT authenticated (anyone "
                            "on the path can offer any release); use TLS, with ?ca= for a private CA", self.target)
                self._warned_plaintext = True
            channel = grpc.insecure_channel(self.target, options=options)
        else:
            try:
                roots = _read_ca(self.ca) if self.ca else system_roots()
            except ValueError as exc:  # the file was fine at config time, gone or changed since
                raise RegistryError(str(exc)) from None
            channel = grpc.secure_channel(self.target, grpc.ssl_channel_credentials(root_certificates=roots),
                                          options=options)
        self._channel, self._stub = channel, dewy_pb2_grpc.RegistryServiceStub(channel)
        return self._stub

    def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    def _call(self, method: str, request):
        """Invoke one RPC with the deadline; RegistryError (code and details, one line) on failure."""
        import grpc

        stub = self._connect()
        try:
            return getattr(stub, method)(request, timeout=self.deadline)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "ERROR"
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                details = "the answer is larger than %d bytes (the cap on a gRPC registry message)" % MAX_MESSAGE
            raise RegistryError("gRPC registry %s: %s failed: %s: %s" % (
                self.target, method, name, redact_text(_one_line(details)) or "no details")) from None

    # --- the Registry interface -----------------------------------------------------------------

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """Ask Current; the release it names, unless its tag is no version, of another slot or refused here."""
        from dewy.registry.proto import dewy_pb2

        request = dewy_pb2.CurrentRequest(arch=self.arch, os=self.os)
        if self.artifact:
            request.arifact_name = self.artifact  # optional field: present on the wire only when set
        response = self._call("Current", request)
        where = "gRPC registry %s" % self.target
        tag = response.tag
        log.debug("%s: Current answered id %r, tag %r, created %s", where, response.id, tag,
                  response.created_at.ToJsonString() if response.HasField("created_at") else "(not given)")
        if not tag:
            raise RegistryError("%s answered Current without a tag" % where)
        try:
            version = self.version_of(tag)
        except ValueError:  # an answer, only not one this host can deploy: no outage (NothingDeployable)
            raise NothingDeployable('%s offers tag "%s", which is not %s' % (
                where, shown(tag), "in calver format %s" % self.calver if self.calver else "a semantic version")) from None
        exclude = tuple(exclude)
        # The server names one release; pre-releases are its choice (grpc:// has no ?pre-release=).
        if versions.select_newest([tag], pre_release=True, slot=self.slot, exclude=exclude,
                                  calver=self.calver) is None:
            if self.slot and versions.select_newest([tag], pre_release=True, slot=self.slot,
                                                    calver=self.calver) is None:
                raise NothingDeployable('%s offers only %s, which is not of slot "%s"' % (where, shown(tag), self.slot))
            raise NothingDeployable("%s offers only version %s, which is refused here (see .dewy/refused.json); "
                                "waiting for a newer one" % (where, version))
        artifact_url = response.artifact_url
        name = self._artifact_name(artifact_url, where, tag)
        self._remember(tag, response.id)
        return Release(version=version, tag=tag, artifact_name=name, artifact_url=artifact_url)

    def _artifact_name(self, artifact_url: str, where: str, tag: str) -> str:
        """The basename of artifact_url's path after checking it as the artifact store will; RegistryError otherwise."""
        if not artifact_url:
            raise RegistryError("%s answered Current for %s without an artifact_url" % (where, tag))
        try:
            # The store's whole check (scheme, query keys, its own rules: an absolute file:// path, a valid
            # bucket, https for a remote host...), as the deploy's artifact.from_url() will: a URL it refuses
            # is this registry's bad answer (one line, the outage logged once), not a deploy failing each poll.
            # The store modules import only the standard library at module level: this stays cheap.
            artifact_pkg.validate_url(artifact_url)
        except ValueError as exc:
            raise RegistryError("%s gave an unusable artifact_url for %s (%s): %s"
                                % (where, tag, redact(artifact_url), shown(exc, 300))) from None
        name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(artifact_url).path))
        if not plain_name(name):
            raise RegistryError("%s gave an artifact_url for %s without a file name: %s"
                                % (where, tag, redact(artifact_url)))
        return name

    def _remember(self, tag: str, response_id: str) -> None:
        """Keep the id Current gave for tag (Report sends it back); only the latest few tags."""
        self._ids.pop(tag, None)
        self._ids[tag] = response_id
        while len(self._ids) > _MAX_IDS:
            self._ids.pop(next(iter(self._ids)))

    def report(self, release: Release, shipped) -> None:
        """Send Report for this deploy attempt: the Current id, tag, mode, and err when it failed."""
        from dewy.registry.proto import dewy_pb2

        request = dewy_pb2.ReportRequest(id=self._ids.get(release.tag, ""), tag=release.tag, command=shipped.mode)
        if shipped.error:
            request.err = shipped.error
        self._call("Report", request)
