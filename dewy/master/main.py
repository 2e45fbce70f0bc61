"""`dewy-master -c INI`: the lean way in, for the process a host keeps running for months.

The full command line (`dewy.cli`, docopt, dewy.config) handles help, --version, --check, usage
errors and the upgrade preflight; the plain `-c INI` that systemd runs goes straight to the master
with its config loaded in a child process (dewy.master.configview), so the long-lived master never
imports docopt, configparser or the registry modules.
"""

import os
import sys

from dewy.master.upgrade import CHECK_ENV

EXIT_CONFIG = 2


def config_path(argv: list) -> str | None:
    """The INI of a plain `-c INI` / `--config INI` / `--config=INI` command line, else None."""
    if len(argv) == 2 and argv[0] in ("-c", "--config") and not argv[1].startswith("-"):
        return argv[1]
    if len(argv) == 1 and argv[0].startswith("--config=") and len(argv[0]) > len("--config="):
        return argv[0][len("--config="):]
    return None


def main(argv: list | None = None) -> int:
    """The `dewy-master` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path = config_path(argv)
    if path is None or os.environ.get(CHECK_ENV) == "1":
        from dewy.cli import master_main
        return master_main(argv)
    from dewy.master.configview import ConfigLoadError, load, reloader, start_load
    loaded = start_load(path)  # the child imports dewy.config while this process imports the arbiter
    from dewy.master import arbiter
    try:
        config = loaded()
    except ConfigLoadError as exc:
        print("dewy-master: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in config.warnings:
        print("dewy-master: warning: %s" % warning, file=sys.stderr)
    absolute = os.path.abspath(path)  # the master may chdir; SIGHUP must still find the file
    return arbiter.run(config, reloader(lambda warnings: load(absolute)))
