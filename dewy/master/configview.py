"""The master's configuration, loaded in a short-lived child so the master never imports the loader.

Parsing and validating an ini file pulls in configparser, difflib, ipaddress, the registry modules
(validating the registry URL imports `dewy.registry.<scheme>`), semver and more: about 8 MiB that a
Python process never gives back once imported (unloading the modules frees nothing measurable). The
master needs none of that to run, so `load()` forks, the child runs `dewy.config.load_ini()` and
sends `Config.to_json()` back over a pipe, and the master rebuilds the same Config from it
(dewy.configtype: the class alone, lean). SIGHUP does the same again. The poller gets the very same
JSON, as before.
"""

import json
import logging
import os

from ..configtype import Config


class ConfigLoadError(Exception):
    """The ini file is bad (str() is dewy.config's one-line ConfigError text) or could not be loaded."""


def reloader(load, errors=()):
    """The master's reload_config() (SIGHUP, `dewy reload`): load(warnings) again, whichever way the config came
    (the ini in a child, the ini or the flags in dewy.cli); an exception in errors (dewy.config.ConfigError)
    becomes a ConfigLoadError with the same text; the warnings are logged. The master keeps its old config when
    this raises."""
    def reload_config() -> Config:
        warnings = []
        try:
            config = load(warnings)
        except errors as exc:
            raise ConfigLoadError(str(exc)) from None
        for warning in [*warnings, *getattr(config, "warnings", ())]:
            logging.getLogger("dewy.master").warning("%s", warning)
        return config
    return reload_config


def load(path: str) -> Config:
    """The validated config of the ini at path, loaded in a child process; ConfigLoadError when it is bad."""
    return start_load(path)()


def start_load(path: str):
    """Start loading the ini at path in a child process; returns a function that waits for it and gives
    the Config (or raises ConfigLoadError). The master's start-up imports its own modules meanwhile,
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


def _answer(path: str, pid: int, r: int) -> Config:
    """Read the child's answer from r, reap it, and give the Config (ConfigLoadError when it is bad)."""
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
        config = Config.from_json(answer["config"])
        # Settings that have no effect, one line each (not part of the config the poller gets).
        object.__setattr__(config, "warnings", tuple(str(w) for w in answer.get("warnings") or ()))
        return config
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
