"""Container mode's real parts: podman (with runc) and docker-registry (Debian's build of the CNCF distribution
registry), set up once per session.

`oci_world` (session fixture, in conftest.py) gives an OCIWorld: its own podman storage and config files in a
directory of its own (removed at the end, with every container in that storage), one registry on 127.0.0.1
without auth and one with htpasswd auth, and `push(repo, tag, ...)` building an image from busybox-static
(`podman import --change CMD=...`) and pushing it with `podman push --tls-verify=false`.

The environment it sets (inherited by every master the tests start, so by their generations' podman calls):
CONTAINERS_CONF (`[containers] default_ulimits = []`, `[engine] runtime = "runc"`, `cgroup_manager =
"cgroupfs"`: what podman needs in this kind of sandbox), CONTAINERS_REGISTRIES_CONF (both registries
`insecure = true`) and CONTAINERS_STORAGE_CONF (vfs storage in the session's directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import servers
from helpers import free_port

# htpasswd entry for user "dewy-test", password "s3cret-pw" (bcrypt, which the registry requires).
HTPASSWD = "dewy-test:$2b$05$sESRa7YjKyXkUdOTkMVRYO57dra.KB7Zgfo6v.ZNmbmLgwquPta3G\n"
USER, PASSWORD = "dewy-test", "s3cret-pw"
BUSYBOX = "/bin/busybox"
START = """trap 'kill $p; exit 0' TERM
httpd -f -p 80 -h /www & p=$!
wait $p
"""


def missing() -> str | None:
    """What of the real parts is not installed (None when all are); podman runs rootful here (as root)."""
    if os.geteuid() != 0:
        return "root (podman runs rootful in these tests)"
    for tool in ("podman", "runc", "docker-registry"):
        if shutil.which(tool) is None:
            return tool
    return None if os.path.exists(BUSYBOX) else BUSYBOX


class RegistryServer(servers.ServerProcess):
    """docker-registry on a 127.0.0.1 port, storage in its scratch dir; with htpasswd auth if asked."""

    name = "docker-registry"

    def __init__(self, auth: bool = False, port: int | None = None):
        super().__init__(port)
        self.auth = auth

    def argv(self) -> list:
        config = Path(self.workdir) / "config.yml"
        auth = ""
        if self.auth:
            (Path(self.workdir) / "htpasswd").write_text(HTPASSWD)
            auth = "auth:\n  htpasswd:\n    realm: dewy-test\n    path: %s/htpasswd\n" % self.workdir
        config.write_text("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\n"
                          "  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%d\n%s"
                          % (self.workdir, self.port, auth))
        return ["docker-registry", "serve", str(config)]

    def _wait_ready(self) -> bool:
        # /v2/ answers 401 with auth: any HTTP answer means it is up.
        import http.client
        import time

        deadline = time.monotonic() + servers.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/v2/")
                conn.getresponse().read()
                return True
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        return False

    @property
    def host(self) -> str:
        """HOST:PORT as an image reference names it."""
        return "127.0.0.1:%d" % self.port


class OCIWorld:
    """podman configured for this sandbox, two registries, and images built on demand."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="dewy-oci-", dir="/var/tmp"))
        self.saved = {}
        self.registry = RegistryServer(port=free_port())
        self.auth_registry = RegistryServer(auth=True, port=free_port())
        self.rootfs = self.base / "rootfs"
        self.counter = 0

    def env(self) -> dict:
        """The variables podman reads its configuration from."""
        return {"CONTAINERS_CONF": str(self.base / "containers.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(self.base / "registries.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.base / "storage.conf")}

    def start(self) -> "OCIWorld":
        """Write the config files, point this process's environment at them, start the registries."""
        (self.base / "tmp").mkdir()
        (self.base / "containers.conf").write_text(
            '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\nimage_copy_tmp_dir = "%s/tmp"\n' % self.base)
        (self.base / "storage.conf").write_text(
            '[storage]\ndriver = "vfs"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n' % (self.base, self.base))
        (self.base / "registries.conf").write_text(
            'unqualified-search-registries = []\n' + "".join(
                '[[registry]]\nlocation = "127.0.0.1:%d"\ninsecure = true\n' % port
                for port in (self.registry.fixed_port, self.auth_registry.fixed_port)))
        for key, value in self.env().items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value
        for server in (self.registry, self.auth_registry):
            server.start()
            servers.SESSION_PIDS.add(server.proc.pid)
        (self.rootfs / "bin").mkdir(parents=True)
        (self.rootfs / "www").mkdir()
        shutil.copy(BUSYBOX, self.rootfs / "bin" / "busybox")
        for tool in ("sh", "httpd", "sleep", "cat"):
            os.symlink("busybox", self.rootfs / "bin" / tool)
        (self.rootfs / "start.sh").write_text(START)
        return self

    def podman(self, *args, check: bool = True, timeout: float = 120) -> str:
        """Run podman with the session's configuration; its stdout."""
        done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError("podman %s failed: %s" % (" ".join(args), done.stderr.strip()[-2000:]))
        return done.stdout

    def build(self, content: str, kind: str = "ok") -> str:
        """An image (local name) serving `content` at / and /version; kind: ok (also /health), unhealthy (no
        /health), broken (exits 3 at once, saying so on stderr), crashing (healthy, exits 2 s later)."""
        self.counter += 1
        www = self.rootfs / "www"
        for name in ("index.html", "version", "health"):
            (www / name).unlink(missing_ok=True)
        (www / "index.html").write_text(content + "\n")
        (www / "version").write_text(content + "\n")
        if kind == "ok":
            (www / "health").write_text("ok\n")
        cmd = '["/bin/sh","/start.sh"]'
        if kind == "crashing":  # healthy, then exits 2 s later: a crash loop
            (www / "health").write_text("ok\n")
            (self.rootfs / "crash.sh").write_text("httpd -f -p 80 -h /www & p=$!\nsleep 2\nkill $p\nexit 1\n")
            cmd = '["/bin/sh","/crash.sh"]'
        if kind == "broken":
            (self.rootfs / "broken.sh").write_text("echo 'broken image: cannot start' >&2\nexit 3\n")
            cmd = '["/bin/sh","/broken.sh"]'
        tarball = self.base / "rootfs.tar"
        subprocess.run(["tar", "-C", str(self.rootfs), "-cf", str(tarball), "."], check=True)
        name = "localhost/dewy-test:%d" % self.counter
        self.podman("import", "-q", "--change", "CMD=%s" % cmd, "--change", "EXPOSE=80", str(tarball), name)
        return name

    def push(self, repo: str, tag: str, content: str | None = None, kind: str = "ok", auth: bool = False) -> str:
        """Build and push an image as REPO:TAG to the (auth) registry; the pushed manifest's digest."""
        server = self.auth_registry if auth else self.registry
        local = self.build(content if content is not None else tag, kind)
        digest_file = self.base / "digest"
        args = ["push", "-q", "--tls-verify=false", "--digestfile", str(digest_file)]
        if auth:
            args += ["--creds", "%s:%s" % (USER, PASSWORD)]
        self.podman(*args, local, "%s/%s:%s" % (server.host, repo, tag))
        return digest_file.read_text().strip()

    def break_layers(self, repo: str, tag: str) -> None:
        """Delete the pushed image's layer blobs from the registry's storage and the image from podman's, so
        the manifest still answers but a pull fails (an upload cut short, a registry that lost data)."""
        import json as _json
        import urllib.request

        request = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (self.registry.host, repo, tag), headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            manifest = _json.load(answer)
        blobs = Path(self.registry.workdir) / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
        for layer in manifest["layers"]:
            digest = layer["digest"].split(":", 1)[1]
            shutil.rmtree(blobs / digest[:2] / digest)
        self.podman("rmi", "-f", "localhost/dewy-test:%d" % self.counter)

    def url(self, repo: str, auth: bool = False) -> str:
        """The img:// registry URL of repo."""
        return "img://%s/%s" % ((self.auth_registry if auth else self.registry).host, repo)

    def containers(self, app: str | None = None) -> list:
        """`podman ps -a` names of the session's containers (with label dewy.app=app when given)."""
        args = ["ps", "-a", "--format", "{{.Names}}"]
        if app:
            args += ["--filter", "label=dewy.app=%s" % app]
        return sorted(line for line in self.podman(*args).split() if line)

    def stop(self) -> None:
        """Remove every container and the storage, stop the registries, restore the environment."""
        try:
            self.podman("rm", "-af", "-t", "0", check=False)
        finally:
            for server in (self.registry, self.auth_registry):
                server.stop()
            for key, value in self.saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.base)], check=False)


@pytest.fixture(scope="session")
def oci_world():
    """The session's OCIWorld (podman + two docker-registry servers); skipped when they are not installed
    (tools/test-setup installs podman, runc, docker-registry and busybox-static)."""
    absent = missing()
    if absent:
        pytest.skip("%s is not installed (container mode's tests need podman, runc, docker-registry, "
                    "busybox-static)" % absent)
    world = OCIWorld()
    try:
        world.start()
    except BaseException:
        world.stop()
        raise
    yield world
    world.stop()
