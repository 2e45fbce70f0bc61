"""Container mode's settings: port mappings (`HOST:CONTAINER`) and the generation command built from them.

Imported by dewy.config only for `mode = container`; the master never imports it (it runs the app command
this module builds, like any other).
"""

import json
import sys

from dewy import urls

DEFAULT_NAME = "app"


def split_port(entry: str) -> tuple:
    """`8080:80` -> ("8080", 80); `8080` -> ("8080", 0: the image's exposed port); ValueError otherwise.

    Dewy's form: PROXY[:CONTAINER]; the proxy side may be any listen address dewy takes (127.0.0.1:8080 as
    `127.0.0.1:8080:80`, unix:/path as `unix:/path:80`)."""
    entry = entry.strip()
    head, sep, tail = entry.rpartition(":")
    bare = head.replace("-", "", 1).isdigit()  # 8080, or a range 8080-8081 (refused by the caller)
    if sep and tail.isdigit() and head and (bare or head.count(":") or head.startswith(("unix:", "["))):
        number = int(tail)
        if not 1 <= number <= 65535:
            raise ValueError("container port %d of %r is not 1-65535" % (number, entry))
        return head, number
    return entry, 0


def split_ports(entries: list) -> tuple:
    """([listen spec], [container port]) for the `port` entries of container mode."""
    listen, ports = [], []
    for raw in entries:
        for entry in raw.split(","):
            if entry.strip():
                spec, port = split_port(entry)
                listen.append(spec)
                ports.append(port)
    return listen, ports


def default_name(registry: str) -> str:
    """Dewy's default app name: the image name of the registry URL (img://ghcr.io/o/myapp:1 -> myapp)."""
    path = urls.parse(registry).path.strip("/")
    name = path.rsplit("/", 1)[-1].split(":", 1)[0]
    return name or DEFAULT_NAME


def generation_spec(values: dict, container_ports: list) -> dict:
    """The JSON-able spec a container generation runs by (see dewy.container.generation)."""
    return {
        "runtime": values["runtime"],
        "name": values["name"] or default_name(values["registry"]),
        "replicas": values["replicas"],
        "ports": container_ports,
        "health_path": values["health_path"],
        "health_timeout": values["health_timeout"],
        "drain_time": values["drain_time"],
        "idle_timeout": values["proxy_idle_timeout"],
        "cmd": list(values["cmd"]),
        "args": list(values["container_args"]),
        "stop_timeout": 10,
    }


def app_argv(spec: dict) -> tuple:
    """The app command of container mode: this Python running the generation module with spec."""
    return (sys.executable, "-m", "dewy.container.generation", json.dumps(spec, sort_keys=True))


def args_problem(args: tuple) -> str | None:
    """Why the extra run options cannot be used (they would break how dewy finds and names its containers)."""
    for i, arg in enumerate(args):
        name = arg.split("=", 1)[0]
        if name in ("--name", "--rm", "-d", "--detach", "--label-file", "--pod"):
            return "%s is set by dewy" % name
        if name in ("--label", "-l") or (arg.startswith("-l") and len(arg) > 2):
            value = arg.split("=", 1)[1] if "=" in arg else (arg[2:] if arg.startswith("-l") and len(arg) > 2
                                                              else (args[i + 1] if i + 1 < len(args) else ""))
            if value.startswith("dewy."):
                return "labels under dewy. are dewy's own (%s)" % value
    return None
