"""docs/ARCHITECTURE.md lists every module of the package, and nothing that is not there.

The "Package layout" block names each top-level module (`dewy/x.py`) and, for each package
(`dewy/registry/`), its modules by file name; dewy/master/ is listed in the "Master modules" block.
A module added, renamed or removed without the document following fails here, naming it.
"""

from __future__ import annotations

import os
import re

import pytest

import dewy

PACKAGE = os.path.dirname(os.path.abspath(dewy.__file__))
DOC = os.path.join(os.path.dirname(PACKAGE), "docs", "ARCHITECTURE.md")
ALWAYS = {"__init__.py", "__main__.py"}  # every package may have them; listed or not


def code_block(text: str, heading: str) -> str:
    """The first ``` block after a `## heading` line."""
    start = text.index("\n## %s\n" % heading)
    opening = text.index("```\n", start) + 4
    return text[opening:text.index("```", opening)]


def documented() -> set:
    """Relative paths of the modules the document lists (a package's `sub/` mention covers all of sub/)."""
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    listed = set()
    entries = re.split(r"\n(?=dewy/)", code_block(text, "Package layout"))
    for entry in entries:
        name, _, rest = entry.partition(" ")
        if name.endswith(".py"):
            listed.add(name)
        elif name.endswith("/"):
            block = code_block(text, "Master modules (dewy/master/)") if name == "dewy/master/" else rest
            listed.update(name + module for module in re.findall(r"\b(\w+\.py)\b", block))
            listed.update(name + sub for sub in re.findall(r"\(\+ (\w+/)\)", block))  # `grpc.py (+ proto/)`
    return listed


def actual() -> set:
    found = set()
    for directory, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                found.add("dewy/" + os.path.relpath(os.path.join(directory, name), PACKAGE))
    return found


def test_the_package_layout_in_architecture_md_is_the_package():
    listed, files = documented(), actual()
    covered = lambda path: path in listed or any(  # noqa: E731
        d.endswith("/") and path.startswith(d) for d in listed)
    missing = sorted(p for p in files if not covered(p) and os.path.basename(p) not in ALWAYS)
    assert not missing, "modules docs/ARCHITECTURE.md does not list: %s" % ", ".join(missing)
    absent = sorted(p for p in listed if not p.endswith("/") and p not in files)
    assert not absent, "docs/ARCHITECTURE.md lists modules that do not exist: %s" % ", ".join(absent)
    absent_dirs = sorted(d for d in listed if d.endswith("/") and not os.path.isdir(os.path.join(
        os.path.dirname(PACKAGE), d)))
    assert not absent_dirs, "docs/ARCHITECTURE.md lists packages that do not exist: %s" % ", ".join(absent_dirs)


MAX_LINES, MAX_METHODS = 600, 40


@pytest.mark.parametrize("package", ["master", "poller"])
def test_no_master_or_poller_module_or_class_grows_past_its_bound(package):
    """dewy/master/, dewy/poller/: small modules (at most MAX_LINES lines), classes of at most MAX_METHODS methods."""
    import ast

    too_big = []
    master = os.path.join(PACKAGE, package)
    for name in sorted(os.listdir(master)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(master, name), encoding="utf-8") as fh:
            text = fh.read()
        if len(text.splitlines()) > MAX_LINES:
            too_big.append("%s: %d lines" % (name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                methods = [f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
                if len(methods) > MAX_METHODS:
                    too_big.append("%s: class %s has %d methods" % (name, node.name, len(methods)))
    assert not too_big, "over the bounds (%d lines, %d methods): %s" % (MAX_LINES, MAX_METHODS, "; ".join(too_big))


# --- layering: docs/ARCHITECTURE.md "Layers" ---------------------------------------------------------------
BACKENDS = ("registry", "artifact", "cache", "notify", "container", "github", "checksums", "releases", "hooks",
            "audit", "fleet", "pause")
PROCESSES = ("poller", "master")
COMMANDS = ("cli", "control", "history", "latest", "fleetview", "dewyflags", "demo")
# what each layer must not import, at module level or inside a function
UPWARD = {BACKENDS: ("config",) + PROCESSES + COMMANDS, ("config",): PROCESSES + COMMANDS}
IMPORT = re.compile(r"^\s*(?:from\s+dewy(?:\.(\w+))?\s+import\s+([\w, ()]+)|import\s+dewy\.(\w+))", re.M)


def imported_tops(path: str) -> set:
    """The first component under dewy of every dewy module path imports (`from dewy import x` counts x)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    tops = set()
    for sub, names, plain in IMPORT.findall(text):
        if plain:
            tops.add(plain)
        elif sub:
            tops.add(sub)
        else:
            tops.update(n.strip() for n in names.strip("()").split(",") if n.strip())
    return tops


def test_no_import_runs_up_the_layers():
    offences = []
    for layer, banned in UPWARD.items():
        for top in layer:
            target = os.path.join(PACKAGE, top)
            files = [target + ".py"] if os.path.isfile(target + ".py") else [
                os.path.join(d, f) for d, _, fs in os.walk(target) for f in fs if f.endswith(".py")]
            for path in files:
                for name in sorted(imported_tops(path) & set(banned)):
                    offences.append("%s imports dewy.%s" % (os.path.relpath(path, os.path.dirname(PACKAGE)), name))
    assert not offences, "imports running up the layers (docs/ARCHITECTURE.md): " + "; ".join(offences)
