"""`python -m dewy.container.generation SPEC`: one app generation of container mode.

The master spawns it like any app (listeners as fds 3.., DEWY_RELEASE_DIR, DEWY_VERSION, DEWY_GENERATION,
NOTIFY_SOCKET: container mode uses `ready = notify`). It:
1. removes stray containers of this app whose owning generation process is gone (a master killed hard);
2. pulls the image of `$DEWY_RELEASE_DIR/image.json` (pinned by digest) unless it is there already;
3. starts `replicas` containers in the foreground (`run --rm`, ports published on 127.0.0.1 only, labelled),
   their output on this process's stderr (the master keeps its tail for a refusal's reason);
4. waits until each answers: a TCP connect to each published port, and GET health-path 2xx when set,
   within health-timeout;
5. accepts on dewy's listeners and proxies to them (dewy.container.proxy), then sends READY=1;
6. exits 1 when a container exits (the master restarts it, or refuses / rolls back the release);
7. on SIGTERM/SIGINT: stops accepting, drains its connections (at most drain-time), stops its containers.
Every failure is one line on stderr and exit 1; nothing it started is left running.

SPEC is the JSON dewy.container.settings.generation_spec() builds from the config.
"""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from dewy.container import runtime as rt
from dewy.container.proxy import Proxy

log = logging.getLogger("dewy.container")

FIRST_FD = 3
POLL = 0.2


class Failed(Exception):
    """The generation cannot serve (one line)."""


def _set_pdeathsig():
    # The foreground `run` client forwards signals to its container (sig-proxy): if this generation dies
    # without stopping it (SIGKILL), the client gets SIGTERM and so does the container (then --rm removes it).
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _alive_owner(pid_text: str) -> bool:
    """Whether the pid a container's dewy.pid label names is a live container generation."""
    if not pid_text.isdigit():
        return False
    try:
        with open("/proc/%s/cmdline" % pid_text, "rb") as fh:
            return b"dewy.container.generation" in fh.read()
    except OSError:
        return False


def _notify(message: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())


def _listeners() -> list:
    count = int(os.environ.get("LISTEN_FDS") or 0)
    return [socket.socket(fileno=FIRST_FD + i) for i in range(count)]


def _http_ok(port: int, path: str, timeout: float) -> str | None:
    """None when GET path on 127.0.0.1:port answers 2xx, else what it answered (for the error)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if not path:
                return None
            sock.sendall(("GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: dewy\r\n\r\n" % path).encode())
            head = sock.recv(256).decode("latin-1")
    except OSError as exc:
        return str(exc.strerror or exc)
    status = head.split("\r\n", 1)[0]
    parts = status.split()
    if len(parts) >= 2 and parts[1].startswith("2"):
        return None
    return status or "no answer"


class Generation:
    """The containers of one generation, and the proxy in front of them."""

    def __init__(self, spec: dict, environ=os.environ):
        self.spec = spec
        self.runtime = rt.Runtime(spec["runtime"])
        self.app = spec["name"]
        self.version = environ.get("DEWY_VERSION", "")
        self.number = environ.get("DEWY_GENERATION", "0")
        release_dir = environ.get("DEWY_RELEASE_DIR", "")
        try:
            with open(os.path.join(release_dir, "image.json"), encoding="utf-8") as fh:
                self.image = json.load(fh)["image"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Failed("cannot read image.json of the release %s: %s" % (release_dir, exc)) from None
        self.names = []
        self.clients = []
        self.stopping = False

    def remove_strays(self) -> None:
        """Remove containers of this app whose generation process is gone (never another app's or a live one's)."""
        strays = [c["name"] for c in self.runtime.managed(self.app)
                  if not _alive_owner(str(c["labels"].get("dewy.pid", "")))]
        if strays:
            log.warning("removing stray containers of %s left by a generation that is gone: %s", self.app,
                        ", ".join(strays))
            self.runtime.remove(strays)

    def pull(self) -> None:
        """Pull the image unless local storage has it (by digest)."""
        if self.runtime.has_image(self.image):
            return
        from dewy.registry.oci import credentials

        started = time.monotonic()
        self.runtime.pull(self.image, credentials(self.image.split("/", 1)[0]))
        log.info("pulled %s in %.1fs", self.image, time.monotonic() - started)

    def container_ports(self) -> list:
        """The container port of each listener (a port without one: the image's only EXPOSEd port)."""
        ports = list(self.spec["ports"])
        if 0 in ports:
            exposed = self.runtime.exposed_ports(self.image)
            if len(exposed) != 1:
                raise Failed("port without a container port (e.g. 8080:80), and the image exposes %s"
                             % (", ".join(map(str, exposed)) or "no port"))
            ports = [p or exposed[0] for p in ports]
        return ports

    def start(self, ports: list) -> None:
        """Start the replicas in the foreground, each in its own session (the master's group signals are not theirs)."""
        stamp = "%d" % (time.time() * 1000)
        for replica in range(self.spec["replicas"]):
            name = "dewy-%s-%s-%d" % (self.app, stamp, replica)
            labels = {"dewy.managed": "true", "dewy.app": self.app, "dewy.version": self.version,
                      "dewy.generation": self.number, "dewy.replica": str(replica), "dewy.pid": str(os.getpid())}
            argv = [self.runtime.path(), "run", "--rm", "--name", name]
            for key, value in labels.items():
                argv += ["--label", "%s=%s" % (key, value)]
            for port in sorted(set(ports)):
                argv += ["-p", "127.0.0.1::%d" % port]
            argv += list(self.spec["args"]) + [self.image] + list(self.spec["cmd"])
            self.names.append(name)
            self.clients.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                                                 start_new_session=True, preexec_fn=_set_pdeathsig))
            log.info("started container %s (%s)", name, self.image)

    def exited(self) -> str | None:
        """Which container exited and how, or None while all run."""
        for name, client in zip(self.names, self.clients):
            code = client.poll()
            if code is not None:
                return "container %s exited with code %d" % (name, code)
        return None

    def wait_ready(self, ports: list) -> list:
        """Wait until every replica answers (within health-timeout); its backends per listener."""
        deadline = time.monotonic() + self.spec["health_timeout"]
        path = self.spec["health_path"]
        hosts = [[None] * len(ports) for _ in self.names]
        last = "not started"
        while True:
            gone = self.exited()
            if gone:
                raise Failed("%s before it became ready" % gone)
            pending = False
            for r, name in enumerate(self.names):
                for i, port in enumerate(ports):
                    if hosts[r][i] is None:
                        hosts[r][i] = self.runtime.published(name, port)
                    if hosts[r][i] is None:
                        pending, last = True, "port %d not published yet" % port
                        continue
                    problem = _http_ok(hosts[r][i], path if i == 0 else "", 2.0)
                    if problem:
                        pending, last = True, ("GET %s: %s" % (path, problem) if path and i == 0
                                               else "port %d: %s" % (port, problem))
            if not pending:
                return [[("127.0.0.1", hosts[r][i]) for r in range(len(self.names))] for i in range(len(ports))]
            if time.monotonic() >= deadline or self.stopping:
                raise Failed("%s not ready within health-timeout %gs (last: %s)" % (
                    ", ".join(self.names), self.spec["health_timeout"], last))
            time.sleep(POLL)

    def stop(self) -> None:
        """Stop and remove the containers; reap the run clients."""
        if not self.names:
            return
        try:
            self.runtime.stop(self.names, self.spec["stop_timeout"])
        except rt.ContainerError as exc:
            log.error("%s", exc)
        for client in self.clients:
            try:
                client.wait(timeout=10)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        log.info("stopped %s", ", ".join(self.names))


async def _serve(gen: Generation, proxy: Proxy) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await proxy.start()
    _notify("READY=1\nSTATUS=serving %s" % gen.image)
    log.info("serving %s from %s", gen.version, ", ".join(gen.names))
    code = 0
    while not stop.is_set():
        gone = gen.exited()
        if gone:  # on stderr: the master shows it (with the container's last output) when it restarts us
            print("dewy container: %s while serving" % gone, file=sys.stderr, flush=True)
            code = 1
            break
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    proxy.stop_accepting()
    if code == 0:
        left = await proxy.drain(gen.spec["drain_time"])
        if left:
            log.warning("drain-time %gs over: closing %d connection(s)", gen.spec["drain_time"], left)
    return code


def main(argv: list | None = None) -> int:
    """Run one container generation (see the module docstring); the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # Progress on stdout (the master's log); stderr carries the containers' output and the one-line failure,
    # whose tail the master puts in a refusal's reason.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="dewy-container[%(process)d] %(levelname)s "
                        "%(message)s")
    spec = json.loads(argv[0])
    gen = None

    def on_signal(signum, frame):  # before serving: give up waiting, clean up
        if gen is not None:
            gen.stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        gen = Generation(spec)
        gen.remove_strays()
        gen.pull()
        ports = gen.container_ports()
        listeners = _listeners()
        if len(listeners) != len(ports):
            raise Failed("%d listening sockets for %d port mappings" % (len(listeners), len(ports)))
        gen.start(ports)
        backends = gen.wait_ready(ports)
        proxy = Proxy(listeners, backends, spec["idle_timeout"])
        return asyncio.run(_serve(gen, proxy))
    except (Failed, rt.ContainerError) as exc:
        print("dewy container: %s" % exc, file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping: let nothing cut the clean-up short
        if gen is not None:
            gen.stop()


if __name__ == "__main__":
    sys.exit(main())
