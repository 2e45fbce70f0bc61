"""`dewy container list`: the containers dewy runs on this host, from the runtime (label dewy.managed=true).

Dewy asks its admin API for this; dewy's containers carry everything in their labels, so the runtime's own
listing answers even when no dewy is running (a stray would show too).
"""

import json
import sys

from dewy.container import runtime as rt


def rows(runtime: str, app: str | None) -> list:
    """dewy's containers as dicts: name, app, version, generation, replica, upstream, state, created, image."""
    found = []
    for c in rt.Runtime(runtime).managed(app):
        labels = c["labels"]
        found.append({"name": c["name"], "app": labels.get("dewy.app", ""), "version": labels.get("dewy.version", ""),
                      "generation": labels.get("dewy.generation", ""), "replica": labels.get("dewy.replica", ""),
                      "upstream": c["ports"], "state": c["state"], "created": c["created"], "image": c["image"]})
    return sorted(found, key=lambda r: (r["app"], r["name"]))


def main(runtime: str, app: str | None, as_json: bool) -> int:
    """Print the table (or JSON); exit 0, or 2 with one line when the runtime cannot be asked."""
    try:
        found = rows(runtime, app)
    except rt.ContainerError as exc:
        print("dewy: %s" % exc, file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({"containers": found}, indent=2))
        return 0
    if not found:
        print("No containers found.")
        return 0
    columns = ("name", "app", "version", "generation", "state", "upstream")
    widths = [max(len(c), *(len(str(r[c])) for r in found)) for c in columns]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in found:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)).rstrip())
    return 0
