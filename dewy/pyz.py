"""Entry point of the single-file zipapp (tools/build-dist): one file, both commands.

`python3 dewy-X.pyz ARGS` (or the file itself, executable, named or linked as `dewy`) is `dewy ARGS`; a link
named `dewy-master` to it is `dewy-master` (the name the kernel runs it by is sys.argv[0]).
"""

import os
import sys


def main() -> int:
    """Run `dewy-master` when invoked under that name, else `dewy`; return the exit code."""
    if os.path.basename(sys.argv[0]).startswith("dewy-master"):
        from dewy.master.main import main as master  # the lean entry (no docopt), as the console script

        return master()
    from dewy.cli import main as dewy

    return dewy()


if __name__ == "__main__":
    sys.exit(main())
