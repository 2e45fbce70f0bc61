"""`dewy rollback`, `dewy pause`, `dewy resume`, `dewy deploy-now`: operator commands sent to a running
dewy-master over its control socket (workdir/.dewy/control.sock; dewy.master.control has the protocol).

Exit codes: 0 done, 1 refused or failed (the reason on stderr), 2 bad command line or config, 3 no master
runs for that workdir.
"""

import json
import sys
import time

from dewy import pause
from dewy import status as status_file
from dewy.master.control import CONTROL_FILE, ControlError, request
from dewy.workdir import state_path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

OPTIONS = """Control options (rollback, pause, resume, deploy-now):
  --to VERSION   rollback: the (still unpacked) version to go back to (default: the previous one).
  --reason TEXT  pause: why, shown by `dewy status`.
  --timeout SECS rollback, deploy-now: how long to follow what happens [default: 600].
"""
POLL = 0.1  # how often the followers read the status file


def send(workdir: str, command: str, args: dict | None = None) -> dict:
    """The master's answer to one command (ControlError when no master listens)."""
    return request(state_path(workdir, CONTROL_FILE), command, args)


def _print(args: dict, data: dict, text: str) -> None:
    """One result: JSON with --json, else the text line."""
    if args.get("--json"):
        print(json.dumps(data, sort_keys=True))
    else:
        print(text)


def _timeout(args: dict) -> float:
    try:
        value = float(args.get("--timeout") or 600)
    except ValueError:
        value = -1
    if value <= 0:
        raise ValueError("--timeout expects a positive number of seconds, got %r" % args.get("--timeout"))
    return value


def main(command: str, workdir: str, args: dict) -> int:
    """Run one operator command against the master of workdir; the exit code."""
    try:
        timeout = _timeout(args)
    except ValueError as exc:
        print("dewy: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    call = {"rollback": ("rollback", {"to": args.get("--to")} if args.get("--to") else {}),
            "pause": ("pause", {"reason": args.get("--reason")} if args.get("--reason") else {}),
            "resume": ("resume", {}), "deploy-now": ("deploy-now", {})}[command]
    before = status_file.read(workdir) or {}
    try:
        answer = send(workdir, *call)
    except ControlError as exc:
        print("dewy: %s: %s" % (workdir, exc), file=sys.stderr)
        return EXIT_NOT_RUNNING
    if not answer.get("ok"):
        if args.get("--json"):
            print(json.dumps(answer, sort_keys=True))
        print("dewy: %s refused: %s" % (command, answer.get("error")), file=sys.stderr)
        return EXIT_FAILED
    if command == "pause":
        paused = answer.get("paused") or {}
        _print(args, answer, "paused since %s%s: no new version is deployed until `dewy resume`" % (
            paused.get("since"), " (%s)" % paused["reason"] if paused.get("reason") else ""))
        return EXIT_OK
    if command == "resume":
        _print(args, answer, "resumed: deploying new versions again" if answer.get("resumed")
               else "not paused: nothing to resume")
        return EXIT_OK
    if command == "rollback":
        if not args.get("--json"):
            print("rolling back from %s to %s (%s)" % (answer.get("from"), answer.get("to"), answer.get("release_dir")))
        return follow_rollback(workdir, answer, before, timeout, args)
    return follow_deploy(workdir, answer, before, timeout, args)


def serves(version, generation) -> str:
    """`1.1.0 serves (generation 3)`; just `1.1.0 serves` in assets mode, which has no generations."""
    return "%s serves%s" % (version, " (generation %s)" % generation if generation else "")


def _deploy_changed(st: dict, before: dict) -> bool:
    return (st.get("last_deploy") or None) != (before.get("last_deploy") or None)


def follow_rollback(workdir: str, answer: dict, before: dict, timeout: float, args: dict) -> int:
    """Wait until the rolled-back-to version serves (0) or the rollback failed (1)."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        st = status_file.read(workdir) or {}
        deploy = st.get("last_deploy") or {}
        if _deploy_changed(st, before) and deploy.get("rolled_back_from") is not None:
            result = dict(answer, last_deploy=deploy, version=st.get("version"), generation=st.get("generation"))
            if deploy.get("ok"):
                left, now = answer.get("from"), deploy.get("version")
                if not left:
                    then = "nothing served before"
                elif pause.refuses_left(left, now, st.get("calver")):
                    then = "%s is refused until a newer version is published" % left
                else:  # forward (undoing a rollback): the older version left did nothing wrong
                    then = "forward from %s, which is not refused (%s is no longer refused either)" % (left, now)
                _print(args, result, "%s; %s" % (serves(now, deploy.get("generation")), then))
                return EXIT_OK
            _print(args, result, "rollback failed: %s" % deploy.get("error"))
            return EXIT_FAILED
        time.sleep(POLL)
    print("dewy: the rollback to %s did not finish within %gs (see dewy status)" % (answer.get("to"), timeout),
          file=sys.stderr)
    return EXIT_FAILED


BAR_WIDTH = 30


def progress_bar(download: dict) -> str:
    """`[#########.....]  45.0% of 120.0 MiB, 12.30 MiB/s, ETA 6s` (no bar when the size is unknown)."""
    from dewy.poller.progress import describe

    snap = {key: download.get(key) for key in ("done", "total", "percent", "mib_per_s", "eta_s")}
    if snap["done"] is None:
        return ""
    if not snap["total"] or snap["percent"] is None:
        return describe(snap)
    filled = int(BAR_WIDTH * min(100.0, snap["percent"]) / 100)
    return "[%s%s] %s" % ("#" * filled, "." * (BAR_WIDTH - filled), describe(snap))


def show_progress(download: dict, quiet: bool) -> bool:
    """Redraw the progress line (a terminal gets one line redrawn, a pipe a line per update); True if drawn."""
    text = progress_bar(download)
    if quiet or not text:
        return False
    if sys.stdout.isatty():
        print("\r" + text, end="", flush=True)
    else:
        print(text, flush=True)
    return True


def end_progress(quiet: bool) -> bool:
    """Finish the redrawn progress line; False (nothing is on the line any more)."""
    if not quiet and sys.stdout.isatty():
        print(flush=True)
    return False


def follow_deploy(workdir: str, answer: dict, before: dict, timeout: float, args: dict) -> int:
    """After `poll-now`: print what happens as it happens; 0 when a new version serves or none is newer, 1 when
    it is refused."""
    wanted = answer.get("poll_request")
    quiet = args.get("--json")
    until = time.monotonic() + timeout
    said = set()

    def say(key: str, text: str) -> None:
        if key not in said and not quiet:
            said.add(key)
            print(text, flush=True)

    say("asked", "asking the registry now (running %s)" % (answer.get("version") or "nothing"))
    announced = None  # the poll count at which a new version was announced
    shown = False     # a progress bar is on the terminal's current line
    last_done = None  # the byte count of the progress last drawn
    while time.monotonic() < until:
        st = status_file.read(workdir) or {}
        deploy = st.get("last_deploy") or {}
        latest, running = st.get("latest_version"), st.get("version")
        if wanted is not None and st.get("poll_request") == wanted:
            if _deploy_changed(st, before) and deploy.get("version") == latest:
                result = {"ok": bool(deploy.get("ok")), "version": latest, "last_deploy": deploy}
                if deploy.get("ok"):
                    _print(args, result, serves(latest, deploy.get("generation")))
                    return EXIT_OK
                _print(args, result, "%s refused: %s" % (latest, deploy.get("error")))
                return EXIT_FAILED
            if announced is None and latest and latest == running and st.get("state") == "running":
                _print(args, {"ok": True, "version": running, "up_to_date": True}, "up to date: %s serves" % running)
                return EXIT_OK
            if announced is None and latest is None and st.get("last_error"):
                error = st["last_error"]
                # The registry may have answered with nothing deployable (the poller says so in those words).
                answered = error.startswith(("nothing to deploy", "waiting for the artifact"))
                _print(args, {"ok": False, "error": error}, error if answered else "the registry did not answer: %s"
                       % error)
                return EXIT_FAILED
            if latest and latest != running and announced is None \
                    and pause.holds(st.get("paused"), latest, st.get("calver")) and st.get("state") == "running":
                _print(args, {"ok": True, "version": running, "held": latest, "paused": st["paused"]},
                       "nothing to deploy: %s is held back (%s)" % (latest, st["paused"].get("reason")))
                return EXIT_OK
            if latest and latest != running and announced is None:
                announced = st.get("polls") or 0
                say("found", "new version %s: downloading, verifying, unpacking" % latest)
            if announced is not None and (st.get("polls") or 0) > announced and latest != running \
                    and st.get("last_error") and st.get("state") != "deploying":
                _print(args, {"ok": False, "version": latest, "error": st["last_error"]},
                       "%s refused: %s" % (latest, st["last_error"]))
                return EXIT_FAILED
            download = st.get("download")
            if announced is not None and isinstance(download, dict) and download.get("version") == latest \
                    and download.get("done") != last_done:
                last_done = download.get("done")  # the master relays a snapshot a second: draw each once
                shown = show_progress(download, quiet) or shown
            if st.get("state") == "deploying":
                if shown:
                    shown = end_progress(quiet)
                say("switch", "switching to %s: generation starting, waiting for it to be ready" % latest)
        time.sleep(POLL)
    print("dewy: nothing finished within %gs (see dewy status)" % timeout, file=sys.stderr)
    return EXIT_FAILED
