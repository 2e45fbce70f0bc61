"""The podman / docker command line, each call bounded in time, failures as one-line ContainerError messages.

Containers dewy runs carry the labels `dewy.managed=true`, `dewy.app=<name>`, `dewy.version`,
`dewy.generation`, `dewy.replica` and `dewy.pid` (the generation process that owns them): dewy finds its
own by them and never touches a container without `dewy.managed=true` and its `dewy.app`.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile

RUNTIMES = ("docker", "podman")
CALL_TIMEOUT = 60.0
PULL_TIMEOUT = 600.0
LABEL = "dewy.managed"


class ContainerError(Exception):
    """A runtime call failed (one line, no credentials)."""


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    # podman/docker put the reason on the last line ("Error: ..."); earlier ones are progress.
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


class Runtime:
    """One container runtime command (`podman` or `docker`)."""

    def __init__(self, name: str):
        if name not in RUNTIMES:
            raise ContainerError("unknown container runtime %r (docker or podman)" % name)
        self.name = name

    def path(self) -> str:
        """The runtime's executable; ContainerError when it is not installed."""
        found = shutil.which(self.name)
        if found is None:
            raise ContainerError("%s is not installed (not found in PATH)" % self.name)
        return found

    def call(self, args: list, timeout: float = CALL_TIMEOUT, env: dict | None = None, what: str = "") -> str:
        """Run `<runtime> args...`; its stdout, or ContainerError naming what failed and why (one line)."""
        argv = [self.path()] + list(args)
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                  env=env, errors="replace")
        except subprocess.TimeoutExpired:
            raise ContainerError("%s %s took longer than %gs" % (self.name, what or args[0], timeout)) from None
        except OSError as exc:
            raise ContainerError("cannot run %s: %s" % (self.name, exc.strerror or exc)) from None
        if done.returncode != 0:
            raise ContainerError("%s %s failed (exit %d): %s" % (self.name, what or args[0], done.returncode,
                                                                 _one_line(done.stderr) or "no message"))
        return done.stdout

    def has_image(self, image: str) -> bool:
        """Whether the image (by digest) is already in local storage."""
        try:
            self.call(["image", "inspect", "--format", "{{.Id}}", image], what="image inspect")
            return True
        except ContainerError:
            return False

    def pull(self, image: str, credentials: tuple = (None, None), timeout: float = PULL_TIMEOUT) -> None:
        """Pull image; with (user, password) through a private auth file that exists only for the call."""
        user, password = credentials
        env = dict(os.environ)
        with tempfile.TemporaryDirectory(prefix="dewy-auth.") as private:
            if user is not None:
                host = image.split("/", 1)[0]
                auth = base64.b64encode(("%s:%s" % (user, password or "")).encode()).decode("ascii")
                path = os.path.join(private, "config.json")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump({"auths": {host: {"auth": auth}}}, fh)
                # podman reads REGISTRY_AUTH_FILE, docker the config.json in DOCKER_CONFIG.
                env["REGISTRY_AUTH_FILE"] = path
                env["DOCKER_CONFIG"] = private
            self.call(["pull", "-q", image], timeout=timeout, env=env, what="pull of %s" % image)

    def exposed_ports(self, image: str) -> list:
        """The TCP ports the image EXPOSEs (sorted), for a `port` entry without a container port."""
        out = self.call(["image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image], what="image inspect")
        try:
            ports = json.loads(out.strip() or "null") or {}
        except ValueError:
            return []
        return sorted(int(p.split("/")[0]) for p in ports if p.endswith("/tcp") and p.split("/")[0].isdigit())

    def published(self, name: str, port: int) -> int | None:
        """The host port on 127.0.0.1 the container's port is published on, or None while not (yet) known."""
        try:
            out = self.call(["port", name, "%d/tcp" % port], timeout=10, what="port")
        except ContainerError:
            return None
        for line in out.splitlines():
            host, _, number = line.strip().rpartition(":")
            if number.isdigit() and host in ("127.0.0.1", "0.0.0.0", ""):
                return int(number)
        return None

    def stop(self, names: list, timeout: float) -> None:
        """Stop the containers (the stop signal, KILL after timeout seconds) and remove them."""
        if names:
            try:
                self.call(["stop", "-t", str(int(timeout))] + list(names), timeout=timeout + 30, what="stop")
            except ContainerError:
                pass  # already gone (exited and removed with --rm): rm below says the rest
            self.remove(names)

    def remove(self, names: list) -> None:
        """Force-remove the containers; ones already gone are no error."""
        if names:
            args = ["rm", "-f"] + (["--ignore"] if self.name == "podman" else []) + list(names)
            try:
                self.call(args, timeout=60, what="rm")
            except ContainerError as exc:
                if "no such container" not in str(exc).lower():
                    raise

    def managed(self, app: str | None = None, running_only: bool = False) -> list:
        """dewy's containers (of app, if given): dicts with name, id, image, state, created, ports, labels."""
        args = ["ps", "--no-trunc", "--format", "{{json .}}", "--filter", "label=%s=true" % LABEL]
        if not running_only:
            args.insert(1, "-a")
        if app:
            args += ["--filter", "label=dewy.app=%s" % app]
        out = self.call(args, what="ps")
        text = out.strip()
        if not text:
            return []
        rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
        return [_row(r) for r in rows]


def _row(raw: dict) -> dict:
    """A `ps` row of podman or docker in one shape."""
    labels = raw.get("Labels") or {}
    if isinstance(labels, str):  # docker: "a=b,c=d"
        labels = dict(part.partition("=")[::2] for part in labels.split(",") if part)
    names = raw.get("Names")
    name = names[0] if isinstance(names, list) and names else names or ""
    ports = raw.get("Ports")
    if isinstance(ports, list):  # podman: [{host_ip, host_port, container_port, protocol}]
        ports = ", ".join("%s:%s->%s/%s" % (p.get("host_ip") or "0.0.0.0", p.get("host_port"), p.get("container_port"),
                                             p.get("protocol", "tcp")) for p in ports if isinstance(p, dict))
    return {"name": name, "id": raw.get("Id") or raw.get("ID") or "", "image": raw.get("Image") or "",
            "state": raw.get("State") or "", "created": raw.get("CreatedAt") or raw.get("Created") or "",
            "ports": ports or "", "labels": labels}
