"""The master's configuration, loaded in a short-lived child so the master never imports the loader.

Parsing and validating an ini file pulls in configparser, difflib, ipaddress, the registry modules
(validating the registry URL imports `dewy.registry.<scheme>`), semver and more: about 8 MiB that a
Python process never gives back once imported (unloading the modules frees nothing measurable). The
master needs none of that to run, so `load()` forks, the child runs `dewy.config.load_ini()` and
sends `Config.to_json()` back over a pipe, and the master keeps a `ConfigView` of that JSON. SIGHUP
does the same again. The poller gets the very same JSON, as before.
"""

import json
import os


class ConfigLoadError(Exception):
    """The ini file is bad (str() is dewy.config's one-line ConfigError text) or could not be loaded."""


class Ready:
    """`ready` of a ConfigView: kind ("delay"/"notify"/"http"), seconds and path, like dewy.config.Ready."""

    __slots__ = ("kind", "seconds", "path")

    def __init__(self, kind: str, seconds: float, path: str = ""):
        self.kind, self.seconds, self.path = kind, float(seconds), path

    def __eq__(self, other):
        return (self.kind, self.seconds, self.path) == (
            getattr(other, "kind", None), getattr(other, "seconds", None), getattr(other, "path", ""))

    def __repr__(self):
        return "Ready(%r, %r, %r)" % (self.kind, self.seconds, self.path)


class ConfigView:
    """A read-only Config made from Config.to_json(): the same attributes, and to_json() gives the JSON back."""

    def __init__(self, data: dict):
        object.__setattr__(self, "_data", dict(data))
        for key, value in data.items():
            if key == "ready":
                value = Ready(value["kind"], value["seconds"], value.get("path", ""))
            elif isinstance(value, list):
                value = tuple(value)
            object.__setattr__(self, key, value)

    def __setattr__(self, key, value):
        raise AttributeError("the configuration is read-only")

    def to_json(self) -> dict:
        """The JSON the child sent (what the poller's Config.from_json takes)."""
        return json.loads(json.dumps(self._data))

    def __repr__(self):
        return "<ConfigView %s>" % self._data.get("source", "?")


def load(path: str) -> ConfigView:
    """The validated config of the ini at path, loaded in a child process; ConfigLoadError when it is bad."""
    return start_load(path)()


def start_load(path: str):
    """Start loading the ini at path in a child process; returns a function that waits for it and gives
    the ConfigView (or raises ConfigLoadError). The master's start-up imports its own modules meanwhile,
    so the two interpreters' imports overlap instead of adding up."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: load, answer, never return into the master's code
        code = 1
        try:
            os.close(r)
            code = _child(path, w)
        finally:
            os._exit(code)
    os.close(w)
    return lambda: _answer(path, pid, r)


def _answer(path: str, pid: int, r: int) -> ConfigView:
    """Read the child's answer from r, reap it, and give the ConfigView (ConfigLoadError when it is bad)."""
    chunks = []
    try:
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {}
    if "config" in answer:
        view = ConfigView(answer["config"])
        # Settings that have no effect, one line each (not part of the config the poller gets).
        object.__setattr__(view, "warnings", tuple(str(w) for w in answer.get("warnings") or ()))
        return view
    raise ConfigLoadError(answer.get("error") or "%s: cannot load the configuration (loader exited with status %d)"
                          % (path, os.waitstatus_to_exitcode(status)))


def _child(path: str, fd: int) -> int:
    """Load path with dewy.config and write {"config": ...} or {"error": ...} to fd; the exit code."""
    try:
        from dewy.config import ConfigError, load_ini
        try:
            warnings = []
            answer, code = {"config": load_ini(path, warnings).to_json(), "warnings": warnings}, 0
        except ConfigError as exc:
            answer, code = {"error": str(exc)}, 2
    except Exception as exc:  # noqa: BLE001 — a bug in the loader: report it rather than hang the master
        answer, code = {"error": "%s: cannot load the configuration: %s: %s" % (path, type(exc).__name__, exc)}, 1
    data = json.dumps(answer).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)
    return code
