#!/usr/bin/env python3
"""Regenerate the configuration reference in README.md from dewy.config.SETTINGS.

    python tools/gen_reference.py [README] [--check]

Replaces what lies between `<!-- BEGIN CONFIG REFERENCE -->` and `<!-- END CONFIG REFERENCE -->`
(the markers stay). `--check` changes nothing and exits 1 when the README is out of date (for CI).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from dewy.config import markdown_table  # noqa: E402

BEGIN = "<!-- BEGIN CONFIG REFERENCE -->"
END = "<!-- END CONFIG REFERENCE -->"


def render(text: str) -> str:
    """text with the reference between the markers replaced by the table generated now."""
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError("the README needs %s and, after it, %s" % (BEGIN, END))
    return text[: start + len(BEGIN)] + "\n\n" + markdown_table() + "\n" + text[end:]


def main(argv: list[str]) -> int:
    """Rewrite (or with --check, compare) the README; 0 when it is current, 1 when --check finds it stale."""
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    path = paths[0] if paths else os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        new = render(text)
    except ValueError as exc:
        print("%s: %s" % (path, exc), file=sys.stderr)
        return 2
    if check:
        if new != text:
            print("%s: configuration reference is out of date; run tools/gen_reference.py" % path, file=sys.stderr)
            return 1
        return 0
    if new != text:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
