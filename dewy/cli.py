"""The `dewy` and `dewy-master` commands: docopt usage, Config building, dispatch.

The setting flags in the usage are generated from dewy.config.SETTINGS; nothing here repeats them.
Exit codes: 0 ok, 1 no status to show, 2 bad command line or configuration, 3 `dewy status` found the
master not running; otherwise whatever the master returns.
"""

import datetime
import json
import os
import re
import sys

from docopt import DocoptExit, docopt

from dewy import __version__
from dewy import dewyflags
from dewy.config import SETTINGS, ConfigError, from_options, load_ini, usage_options

EXIT_OK = 0
EXIT_NO_STATUS = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

# Each command's usage line as the help shows it.
COMMANDS = {
    "server": "dewy server [options] [--] CMD [ARG...]",
    "assets": "dewy assets [options]",
    "container": "dewy container [options] [-- OPT...]",
    "container list": "dewy container list [--runtime NAME] [--name NAME] [--json]",
    "status": "dewy status [--workdir DIR | --config INI] [--json]",
    "latest": "dewy latest [-c INI | --registry URL] [--slot SLOT] [--json]",
    "history": "dewy history [--workdir DIR | --config INI] [-n N] [--json]",
    "rollback": "dewy rollback [--workdir DIR | --config INI] [--to VERSION] [--timeout SECS] [--json]",
    "pause": "dewy pause [--workdir DIR | --config INI] [--reason TEXT] [--json]",
    "resume": "dewy resume [--workdir DIR | --config INI] [--json]",
    "deploy-now": "dewy deploy-now [--workdir DIR | --config INI] [--timeout SECS] [--json]",
    "fleet": "dewy fleet [-c INI] [--json]",
    "demo": "dewy demo",
}

# The host's config (the .deb installs it, the systemd unit runs it): status, history, latest, fleet and the
# control commands read it when given neither -c nor --workdir outside a workdir. Tests point it elsewhere.
DEFAULT_CONFIG = os.environ.get("DEWY_TEST_DEFAULT_CONFIG") or "/etc/dewy/dewy.ini"

STATUS_OPTIONS = """Status options:
  --workdir DIR         The workdir whose status to show (default: the current directory when it is one,
                        else the workdir of /etc/dewy/dewy.ini, else the current directory).
  -c INI, --config INI  Take the workdir from this ini file.
  --json                Print the status file as it is (JSON).
"""

OTHER_OPTIONS = """Other options:
  -h, --help     Show this help.
  -v, --version  Show dewy's version (as Dewy: dewy version: X [commit, date]).
"""

MASTER_DOC = """dewy-master: run dewy from an ini file (the way systemd starts it).

Usage:
  dewy-master -c INI [--check]
  dewy-master -h | --help
  dewy-master --version

Options:
  -c INI, --config INI  The ini file; its [dewy] section holds the settings (see the README reference).
  --check               Only validate the file: print OK and exit 0, or the error and exit 2.
  -h, --help            Show this help.
  --version             Show dewy's version.

Signals: HUP re-reads the ini file and restarts the app gracefully; USR1 restarts the app gracefully;
USR2 upgrades dewy-master in place; TERM/INT stop gracefully; QUIT stops fast.
"""


def usage() -> str:
    """The `Usage:` block of `dewy --help`."""
    lines = ["Usage:"] + ["  " + line for line in COMMANDS.values()] + ["  dewy -h | --help", "  dewy -v | --version"]
    return "\n".join(lines) + "\n"


def setting_options() -> str:
    """The `Options:` block for server/assets, generated from SETTINGS, then Dewy's own flags (dewy.dewyflags)."""
    return "Options:\n" + "\n".join(usage_options()) + "\n\n" + dewyflags.options_block()


def help_text() -> str:
    """The whole `dewy --help` text."""
    return "\n".join([
        "dewy: keep an app (server), static files (assets) or an image's containers (container) on the newest "
        "release of a registry.\n",
        usage(), setting_options(), STATUS_OPTIONS, latest_options(), history_options(), control_options(),
        fleet_options(), CONTAINER_LIST_OPTIONS, OTHER_OPTIONS,
        "Every setting is also an ini key: dewy-master -c dewy.ini reads the same settings from [dewy].",
    ])


def command_doc(command: str) -> str:
    """The docopt text that parses one command.

    docopt drops from `[options]` every option that a usage line names explicitly, and makes an option
    repeatable only when the pattern repeats it; so each command is parsed on its own, with the
    repeatable setting flags spelled out after `[options]`.
    """
    line = COMMANDS[command]
    repeated = " ".join("[%s %s]..." % (s.flag, s.meta) for s in SETTINGS if s.flag and s.multiple)
    line = line.replace("[options]", "[options] " + repeated)
    options = {"server": setting_options(), "assets": setting_options(), "container": setting_options(),
               "container list": CONTAINER_LIST_OPTIONS, "status": STATUS_OPTIONS,
               "latest": latest_options(), "history": STATUS_OPTIONS + history_options(),
               "fleet": fleet_options()}.get(
                   command, STATUS_OPTIONS + control_options() if command in CONTROL_COMMANDS else "")
    return "Usage:\n  %s\n\n%s" % (line, options)


def _wants_version(argv: list[str]) -> bool:
    """`dewy -v` / `dewy --version`, alone or among server/assets options (Dewy prints its version there too;
    after -- they belong to the app)."""
    options = argv[:argv.index("--")] if "--" in argv else argv
    if options and options[0] in ("server", "assets", "container"):
        options = options[1:]
    elif options[1:]:
        return False
    return "-v" in options or "--version" in options


def _wants_help(argv: list[str]) -> bool:
    """Whether -h/--help appears among the options (not in the app's argv after --)."""
    options = argv[:argv.index("--")] if "--" in argv else argv
    return "-h" in options or "--help" in options


def _usage_error(detail: str, prog: str = "dewy", text: str | None = None) -> int:
    """Print the usage (and what was wrong) to stderr; return the usage exit code."""
    if detail:
        print("%s: %s" % (prog, detail), file=sys.stderr)
    print(text if text is not None else usage(), file=sys.stderr, end="")
    print("See '%s --help'." % prog, file=sys.stderr)
    return EXIT_USAGE


def _docopt_detail(exc: DocoptExit) -> str:
    """What docopt objected to, in words, without the usage text it appends."""
    text = str(exc)
    usage_text = (exc.usage or "").strip()
    if usage_text and usage_text in text:
        text = text[: text.index(usage_text)]
    if "unmatched" in text:
        # docopt lists leftovers as reprs: Option('-p', '--port', 1, '8000'), Argument(None, 'x')
        names = [long or short for short, long in re.findall(r"Option\((?:'([^']*)'|None), (?:'([^']*)'|None)", text)]
        names += re.findall(r"Argument\(None, '([^']*)'\)", text)
        return "unexpected %s" % ", ".join(names) if names else "unexpected arguments"
    return " ".join(text.split())


def _given_twice(options_text: str, argv: list[str]) -> str | None:
    """The first option of options_text (docopt option lines) that argv gives twice, unless it is repeatable
    (a `multiple` setting such as --port); docopt itself would only say "unexpected --workdir"."""
    from docopt import parse_options

    repeatable = {s.flag for s in SETTINGS if s.flag and s.multiple}
    by_name = {}
    for option in parse_options(options_text):
        for name in (option.short, option.longer):
            if name:
                by_name[name] = option
    tokens = argv[:argv.index("--")] if "--" in argv else argv
    seen = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-") or token == "-":
            continue
        name, attached = token.partition("=")[0], "=" in token
        if not name.startswith("--") and len(name) > 2:  # -p8000: a short option with its value attached
            name, attached = name[:2], True
        option = by_name.get(name)
        if option is None:
            continue
        if option.argcount and not attached:
            i += 1  # its value, which may itself start with "-"
        key = option.longer or option.short
        if key in seen and key not in repeatable:
            return key
        seen.add(key)
    return None


def _has_config(argv: list[str]) -> bool:
    """Whether argv gives -c/--config (in any of its spellings)."""
    return any(a in ("-c", "--config") or a.startswith(("--config=", "-c")) for a in argv)


def _parses(doc: str, argv: list[str]) -> bool:
    """Whether docopt accepts argv (to tell a missing app command from other mistakes)."""
    try:
        docopt(doc, argv, default_help=False)
    except DocoptExit:
        return False
    return True


def _parse(command: str, argv: list[str]):
    """docopt's answer for one command, or an exit code after a usage error."""
    doc = command_doc(command)
    try:
        return docopt(doc, argv, default_help=False)
    except DocoptExit as exc:
        detail = _docopt_detail(exc)
        twice = _given_twice(doc.partition("\n\n")[2], argv[1:])
        if twice:
            return _usage_error("%s given twice; give it once" % twice)
        if command == "fleet" and not _has_config(argv[1:]):
            return _usage_error("`dewy fleet` needs -c INI (the ini file whose cache the fleet shares)")
        if command == "server" and "--" not in argv and _parses(doc, argv + ["./app"]):
            detail = "the app's command is missing (it follows the options, after -- when it starts with -), " \
                     "e.g. dewy server --registry URL -p 8000 -- ./app"
        if command == "latest" and not {"-c", "--config", "--registry"} & {a.split("=")[0] for a in argv}:
            detail = "dewy latest asks the registry of an ini file (-c INI) or a URL (--registry URL)"
        return _usage_error(detail or "bad arguments for %s" % command)


class _Watched:
    """A text stream that passes everything on and remembers it (stderr) or that something came (stdout)."""

    def __init__(self, stream, keep: bool):
        self.stream, self.keep, self.written = stream, keep, []

    def write(self, text):
        if text:
            self.written.append(text if self.keep else "")
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _json_errors(run, argv: list[str]) -> int:
    """run() for a command given --json: an error it reports only on stderr is also printed on stdout as
    `{"error": "...", "exit": N}`, so a script reading stdout always gets JSON."""
    out, err = _Watched(sys.stdout, keep=False), _Watched(sys.stderr, keep=True)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = run(argv)
    finally:
        sys.stdout, sys.stderr = saved
    if code and not out.written:
        lines = [line for line in "".join(err.written).splitlines() if line.strip()]
        message = lines[0] if lines else "exit code %d" % code
        for prefix in ("dewy: ", "dewy-master: "):
            if message.startswith(prefix):
                message = message[len(prefix):]
        print(json.dumps({"error": message, "exit": code}))
    return code


def main(argv: list[str] | None = None) -> int:
    """The `dewy` command (and `python -m dewy`); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if "--json" in (argv[:argv.index("--")] if "--" in argv else argv):
            return _json_errors(_main, argv)
        return _main(argv)
    except BrokenPipeError:
        # `dewy history | head`: the reader left; no traceback, and no second error when Python flushes.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _wants_version(argv):
        text, to_stderr = dewyflags.version_output(__version__, argv)
        print(text, file=sys.stderr if to_stderr else sys.stdout)
        return EXIT_OK
    command = argv[0] if argv else ""
    if command == "container" and argv[1:2] == ["list"]:
        command, argv = "container list", ["container", "list"] + argv[2:]
    if _wants_help(argv):
        # `dewy status --help`: that command's usage and options only; `dewy --help`: everything.
        print(command_doc(command).rstrip("\n") if command in COMMANDS else help_text())
        return EXIT_OK
    if command not in COMMANDS:
        return _usage_error('unknown command "%s"' % command if command else "")
    args = _parse(command, argv)
    if isinstance(args, int):
        return args
    if command in ("fleet", "latest") and not args.get("--config") and not args.get("--registry"):
        if not os.path.exists(DEFAULT_CONFIG):
            return _usage_error("`dewy fleet` needs -c INI (the ini file whose cache the fleet shares)"
                                if command == "fleet" else
                                "dewy latest asks the registry of an ini file (-c INI) or a URL (--registry URL)")
        args["--config"] = DEFAULT_CONFIG
    if command in CONTROL_COMMANDS:
        return control(command, args)
    return {"server": run_mode, "assets": run_mode, "container": run_mode, "container list": container_list,
            "status": status, "latest": latest, "demo": demo,
            "history": history, "fleet": fleet}[command](args)


# --- server / assets ---------------------------------------------------------------------------

def options_from_args(args: dict) -> dict:
    """docopt's answer for server/assets -> the raw values dewy.config.from_options takes."""
    values = {"mode": "server" if args.get("server") else "container" if args.get("container") else "assets"}
    for s in SETTINGS:
        if s.flag:
            values[s.name] = args.get(s.flag)
    if args.get("container"):
        values["container-args"] = list(args.get("OPT") or []) or None
    elif args.get("CMD"):
        values["app"] = [args["CMD"]] + list(args.get("ARG") or [])
    dewyflags.translate(args, values)  # Dewy's flags (--max-backoff-interval, --calver...) onto the settings
    return values


CONTAINER_LIST_OPTIONS = """Container list options:
  --runtime NAME  docker or podman [default: docker].
  --name NAME     Only this app's containers (the dewy.app label).
  --json          Print the containers as JSON.
"""


def container_list(args: dict) -> int:
    """`dewy container list`: the containers dewy runs on this host (label dewy.managed=true)."""
    from dewy.container import listing

    return listing.main(args["--runtime"] or "docker", args["--name"], args["--json"])


def run_master(config, reload_config) -> int:
    """Hand over to the master (imported only now, so `dewy status` and `--check` stay light)."""
    from dewy.master import arbiter, upgrade

    if os.environ.get(upgrade.CHECK_ENV) == "1":
        # A running master's upgrade preflight: config and code are fine; the workdir must be too.
        from dewy import workdir

        problems = workdir.check(config.workdir)
        if problems:
            print("dewy: %s" % problems[0], file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    return arbiter.run(config, reload_config)


def run_mode(args: dict) -> int:
    """`dewy server|assets`: build the Config from the flags (exit 2 when bad) and run the master."""
    cwd = os.getcwd()  # SIGHUP re-resolves relative paths against where dewy started, not where it is now
    warnings: list = []
    try:
        values = options_from_args(args)
        config = from_options(values, base_dir=cwd, warnings=warnings)
    except ConfigError as exc:
        print("dewy: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    for warning in warnings:
        print("dewy: warning: %s" % warning, file=sys.stderr)
    from dewy.master.configview import reloader  # the same flags again on SIGHUP

    return run_master(config, reloader(lambda warnings: from_options(values, base_dir=cwd, warnings=warnings),
                                       ConfigError))


# --- dewy-master -------------------------------------------------------------------------------

def master_main(argv: list[str] | None = None) -> int:
    """The `dewy-master -c INI [--check]` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = docopt(MASTER_DOC, argv, version="dewy-master %s" % __version__)
    except DocoptExit as exc:
        usage_text = "Usage:\n" + "\n".join(line for line in MASTER_DOC.splitlines() if line.startswith("  dewy-master"))
        detail = _docopt_detail(exc)
        twice = _given_twice(MASTER_DOC[MASTER_DOC.index("Options:"):], argv)
        if twice:
            detail = "%s given twice; give it once" % twice
        elif "--check" in argv and not _has_config(argv):
            detail = "`dewy-master --check` needs -c INI (the ini file to validate)"
        return _usage_error(detail, "dewy-master", usage_text + "\n")
    except SystemExit as exc:  # docopt printed --help or --version
        return exc.code or EXIT_OK
    path = args["--config"]
    warnings: list = []
    try:
        config = load_ini(path, warnings)
    except ConfigError as exc:
        print("dewy-master: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    for warning in warnings:
        print("dewy-master: warning: %s" % warning, file=sys.stderr)
    if args["--check"]:
        return check_master(path, config)
    absolute = os.path.abspath(path)  # the master may chdir; SIGHUP must still find the file
    from dewy.master.configview import reloader  # the ini read again on SIGHUP

    return run_master(config, reloader(lambda warnings: load_ini(absolute, warnings), ConfigError))


def check_master(path: str, config) -> int:
    """`dewy-master --check`: the config loaded; now the workdir (exit 2 when unusable) and who holds it."""
    from dewy import workdir

    from dewy.master.generation import startup_problem

    problems = ["%s: %s" % (path, problem) for problem in workdir.check(config.workdir)]
    app_problem = startup_problem(config)
    if app_problem:
        problems.append(app_problem)
    for problem in problems:
        print("dewy-master: %s" % problem, file=sys.stderr)
    if problems:
        return EXIT_USAGE
    holder = workdir.holder(config.workdir)
    if holder:
        # A warning, not an error: checking the file of a running master is normal before a restart.
        print("dewy-master: %s: warning: workdir %s is in use by dewy-master pid %s; a second master there "
              "would exit 2" % (path, config.workdir, holder), file=sys.stderr)
    print("dewy-master: %s: OK" % path)
    return EXIT_OK


# --- dewy status -------------------------------------------------------------------------------

def _status_workdir(args: dict) -> str:
    """The workdir `dewy status` looks at: --workdir, the ini's workdir, or the current directory."""
    if args.get("--config"):
        return load_ini(args["--config"]).workdir
    if not args.get("--workdir") and not os.path.isdir(".dewy") and os.path.exists(DEFAULT_CONFIG):
        return load_ini(DEFAULT_CONFIG).workdir  # not in a workdir: the host's dewy
    return os.path.abspath(args.get("--workdir") or ".")


def _epoch(value) -> float | None:
    """A status time (ISO 8601 text or epoch seconds) as epoch seconds, None when absent or unreadable."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def master_alive(data: dict) -> bool:
    """Whether the master that wrote the status still runs (not dead, not a zombie, pid not reused)."""
    import psutil

    pid = data.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists, it is just not ours to inspect
    started = _epoch(data.get("started_at"))
    # A process created well after the master started is an unrelated one that got the same pid.
    return started is None or created <= started + 5


def _show(value) -> str:
    """A status value for the table ("-" when empty)."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _deploy_line(deploy) -> str:
    """The last deploy as `1.2.3 ok at TIME` or `1.2.4 FAILED at TIME: error`."""
    if not isinstance(deploy, dict):
        return _show(deploy)
    line = "%s %s at %s" % (_show(deploy.get("version")), "ok" if deploy.get("ok") else "FAILED",
                            _show(deploy.get("time")))
    return line + (": %s" % deploy["error"] if deploy.get("error") else "")


def _respawn_line(respawn) -> str:
    """A restart of a dead app waiting out its backoff: `attempt 3 in 2.0s (at TIME)`, or "-"."""
    if not isinstance(respawn, dict):
        return "-"
    return "attempt %s in %ss (at %s)" % (_show(respawn.get("attempt")), _show(respawn.get("delay")),
                                          _show(respawn.get("at")))


def _paused_line(paused) -> str:
    """`dewy pause`: `since TIME: reason`, or `no`."""
    if not isinstance(paused, dict):
        return "no"
    return "since %s%s" % (_show(paused.get("since")), ": %s" % paused["reason"] if paused.get("reason") else "")


def _download_line(download) -> str:
    """The download under way: `1.2.0 app.tar.gz: 45.0% of 120.0 MiB, 12.30 MiB/s, ETA 6s`, or "-"."""
    if not isinstance(download, dict) or download.get("done") is None:
        return "-"
    from dewy.poller.progress import describe

    snap = {key: download.get(key) for key in ("done", "total", "percent", "mib_per_s", "eta_s")}
    return "%s %s: %s" % (download.get("version"), download.get("artifact"), describe(snap))


BUSY_STATES = ("polling", "downloading", "deploying")


def _poller_line(poller) -> str:
    """What the poller says it does: `deploying 1.1.0 (before-hook) since TIME`, `paused 1.2.0 (paused): why ...`."""
    if not isinstance(poller, dict) or not poller.get("state"):
        return "-"
    version = poller.get("target") or poller.get("held")
    line = "%s%s (%s)" % (poller["state"], " " + str(version) if version else "", _show(poller.get("reason")))
    if poller.get("since"):
        line += " since %s" % poller["since"]
    return line + (": %s" % poller["reason_text"] if poller.get("reason_text") else "")


def _next_poll_line(data: dict) -> str:
    """When the next poll is due; while the poller is busy (or being restarted) that, not a time already past."""
    poller = data.get("poller") if isinstance(data.get("poller"), dict) else {}
    state, due = poller.get("state"), data.get("next_poll")
    if state in BUSY_STATES:
        return "- (%s now)" % state
    if state in ("stuck", "exited", "starting"):
        return "- (the poller is being restarted)" if state != "starting" else "- (the poller is starting)"
    line = _show(due)
    try:
        import datetime
        late = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(due.replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return line
    if late.total_seconds() > 10:
        line += " (overdue by %ds: the poller has not polled since)" % late.total_seconds()
    return line


def _downloading(data: dict) -> str | None:
    """The version the poller says it downloads (before its first progress snapshot), else None."""
    poller = data.get("poller") if isinstance(data.get("poller"), dict) else {}
    return poller.get("target") if poller.get("state") == "downloading" else None


def format_status(workdir: str, data: dict, running: bool) -> str:
    """The human-readable `dewy status` table."""
    pid = data.get("pid")
    if running:
        state = "%s (master pid %s)" % (_show(data.get("state")), pid)
        if isinstance(data.get("respawn"), dict) and not data.get("app_pids"):
            state += ": the app is down, restarting it (crash loop?)"
    else:
        state = "not running (stale status from pid %s)" % pid
    last_poll = _show(data.get("last_poll"))
    if data.get("latest_version"):
        last_poll += " (latest %s)" % data["latest_version"]
    rows = [
        ("workdir", workdir), ("state", state), ("mode", _show(data.get("mode"))),
        ("version", _show(data.get("version"))), ("serving since", _show(data.get("serving_since"))),
        ("generation", _show(data.get("generation"))),
        ("release", _show(data.get("release_dir"))), ("app pids", _show(data.get("app_pids"))),
        ("restart", _respawn_line(data.get("respawn"))),
        ("retiring pids", _show(data.get("retiring_pids"))), ("poller pid", _show(data.get("poller_pid"))),
        ("poller", _poller_line(data.get("poller"))), ("listening", _show(data.get("listen"))),
        ("last poll", last_poll), ("next poll", _next_poll_line(data)),
        ("download", _download_line(data.get("download")) if data.get("download") or not _downloading(data)
         else "%s: starting" % _downloading(data)), ("last error", _show(data.get("last_error"))),
        ("errors", _show(data.get("errors") or None)),
        ("last deploy", _deploy_line(data.get("last_deploy"))), ("paused", _paused_line(data.get("paused"))),
        ("rollout", _show(data.get("rollout"))),
        ("started", _show(data.get("started_at"))),
        ("updated", _show(data.get("updated_at"))), ("dewy", _show(data.get("dewy_version"))),
    ]
    return "\n".join("%-14s %s" % row for row in rows)


def _with_workdir(args: dict, run) -> int:
    """run(workdir) for the workdir of --workdir / --config / the current directory; exit 2 when the ini is bad."""
    try:
        workdir = _status_workdir(args)
    except ConfigError as exc:
        # A running master keeps its config when the file went bad (HUP refused it): --workdir still works.
        print("dewy: %s\ndewy: (the workdir comes from that file; give it with --workdir DIR instead)" % exc,
              file=sys.stderr)
        return EXIT_USAGE
    return run(workdir)


def status(args: dict) -> int:
    """`dewy status`: print what the master of a workdir reports (0 running, 1 no status, 3 not running)."""
    return _with_workdir(args, lambda workdir: _status(workdir, args))


def _status(workdir: str, args: dict) -> int:
    from dewy import statefiles as status_file

    try:
        # An unreadable .dewy/ (not root, not dewy's user): say "permission denied", not a bare errno.
        os.close(os.open(status_file.status_path(workdir), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC))
    except PermissionError:
        print("dewy: cannot read %s: permission denied (run it as root or as the user dewy runs as)"
              % status_file.status_path(workdir), file=sys.stderr)
        return EXIT_NO_STATUS
    except OSError:
        pass  # missing (said below), or not a plain file (read_state refuses it)
    try:
        data = status_file.read_state(status_file.status_path(workdir), "status file")
    except ValueError as exc:  # StateFileError: there, but unreadable, which is not "no master has run there"
        print("dewy: %s" % exc, file=sys.stderr)
        return EXIT_NO_STATUS
    if data is None:
        print("dewy: no status in %s: no dewy master has run there (no %s)"
              % (workdir, status_file.status_path(workdir)), file=sys.stderr)
        return EXIT_NO_STATUS
    running = master_alive(data)
    if args.get("--json"):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(format_status(workdir, data, running))
    return EXIT_OK if running else EXIT_NOT_RUNNING


# --- dewy latest -------------------------------------------------------------------------------

def latest_options() -> str:
    """The `Latest options:` block (declared with the command in dewy.latest)."""
    from dewy.latest import OPTIONS

    return OPTIONS


def latest(args: dict) -> int:
    """`dewy latest`: what the registry offers now (dewy.latest)."""
    from dewy import latest as latest_module

    return latest_module.main(args)


# --- dewy history ------------------------------------------------------------------------------

def history_options() -> str:
    """The `History options:` block (declared with the command in dewy.history)."""
    from dewy.history import OPTIONS

    return OPTIONS


def history(args: dict) -> int:
    """`dewy history`: deploys, refusals and rollbacks from the audit log, newest first (dewy.history)."""
    from dewy import history as history_module

    return _with_workdir(args, lambda workdir: history_module.main(workdir, args))


# --- dewy fleet --------------------------------------------------------------------------------

def fleet_options() -> str:
    """The `Fleet options:` block (declared with the command in dewy.fleetview)."""
    from dewy.fleetview import OPTIONS

    return OPTIONS


def fleet(args: dict) -> int:
    """`dewy fleet`: the hosts sharing this app's cache and the rollout under way (dewy.fleetview)."""
    from dewy import fleetview

    return fleetview.main(args)


# --- dewy rollback / pause / resume / deploy-now -------------------------------------------------

CONTROL_COMMANDS = ("rollback", "pause", "resume", "deploy-now")  # sent to the master's control socket


def control_options() -> str:
    """The `Control options:` block (declared with the commands in dewy.control)."""
    from dewy.control import OPTIONS

    return OPTIONS


def control(command: str, args: dict) -> int:
    """An operator command for the running master of a workdir (dewy.control)."""
    from dewy import control as control_module

    return _with_workdir(args, lambda workdir: control_module.main(command, workdir, args))


# --- dewy demo ---------------------------------------------------------------------------------

def demo(args: dict) -> int:
    """`dewy demo`: a live zero-downtime deploy of the sample app (dewy.demo.demo)."""
    from dewy.demo import demo as demo_module

    return demo_module.main()
