"""`dewy rollback`, `dewy pause`, `dewy resume`, `dewy deploy-now`: operator commands sent to a running
dewy-master over its control socket (workdir/.dewy/control.sock; dewy.master.control has the protocol).

Exit codes: 0 done, 1 refused or failed (the reason on stderr), 2 bad command line or config, 3 no master
runs for that workdir.
"""

import json
import sys
import time

from dewy import pause
from dewy import statefiles as status_file
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
        in_flight, note = deploy_in_flight(current_status(workdir))
        _print(args, dict(answer, in_flight=in_flight), "paused since %s%s: no new version is deployed until "
               "`dewy resume`%s" % (paused.get("since"), " (%s)" % paused["reason"] if paused.get("reason") else "",
                                    "; " + note if note else ""))
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


# The steps of a deploy past its point of no return (the master was asked to switch): a pause lets them finish.
PAST_SWITCH = ("switching", "after-hook", "finishing")


def deploy_in_flight(st: dict) -> tuple:
    """({version, stops} or None, a note for the operator): the deploy under way when deploys were just paused.
    Before its switch the poller stops it there; once the master switches (readiness wait) it finishes."""
    poller = st.get("poller") or {}
    switching = st.get("deploying") or {}
    if switching.get("version"):
        version, stops = switching["version"], False
    elif poller.get("state") in ("downloading", "deploying") and poller.get("target"):
        version, stops = poller["target"], poller.get("reason") not in PAST_SWITCH
    else:
        return None, ""
    if stops:
        return {"version": version, "stops": True}, "the deploy of %s under way stops before its switch" % version
    return {"version": version, "stops": False}, ("%s is already switching (past its point of no return): that "
                                                  "deploy finishes" % version)


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


def current_status(workdir: str) -> dict:
    """The master's status as it is now: asked over the control socket (the status file may lag, or not be
    written at all on a full disk), else read from the file (a master re-executing itself for USR2); {} if none."""
    try:
        answer = send(workdir, "status")
        if answer.get("ok") and isinstance(answer.get("status"), dict):
            return answer["status"]
    except (ControlError, OSError):  # OSError: a connection reset by a master re-executing itself (USR2)
        pass
    try:
        return status_file.read(workdir) or {}
    except (OSError, ValueError):
        return {}


def _outcome(st: dict, latest: str | None, followed: str | None = None, before: dict | None = None) -> tuple | None:
    """What a poll after our `deploy-now` came to, from the poller's stated state (dewy/poller/states.py), as
    (exit code, JSON result, text); None while it still works on it. followed: the version whose deploy was seen
    under way (a poller restarted meanwhile, by USR2 say, finds it serving: that deploy is what serves)."""
    poller = st.get("poller") or {}
    state, reason, text = poller.get("state"), poller.get("reason"), poller.get("reason_text")
    target, held, running = poller.get("target"), poller.get("held"), st.get("version")
    deploy = st.get("last_deploy") or {}
    if state == "idle":
        if reason == "deployed" and deploy.get("version") == target and deploy.get("ok"):
            return EXIT_OK, {"ok": True, "version": target, "last_deploy": deploy}, serves(
                target, deploy.get("generation"))
        if reason == "up-to-date" and st.get("state") == "running" and followed and followed == running \
                and deploy.get("ok") and deploy.get("version") == running and _deploy_changed(st, before or {}):
            return EXIT_OK, {"ok": True, "version": running, "last_deploy": deploy}, serves(
                running, deploy.get("generation"))
        if reason == "up-to-date" and st.get("state") == "running":
            return EXIT_OK, {"ok": True, "version": running, "up_to_date": True}, "up to date: %s serves" % running
        if reason == "refused":
            result = {"ok": False, "version": target, "error": text, "refused": True}
            if deploy.get("version") == target:
                result["last_deploy"] = deploy
            return EXIT_FAILED, result, "%s refused: %s" % (target, text)
        if reason == "deploy-failed":  # transient: a hook, a full disk, a download cut short
            return EXIT_FAILED, {"ok": False, "version": target, "error": text, "retry": True}, \
                "%s failed (will retry): %s" % (target, text)
        if reason in ("nothing-deployable", "not-yet-published", "unfinished"):
            return EXIT_FAILED, {"ok": False, "error": text, "reason": reason}, text
        if reason == "registry-failed":
            return EXIT_FAILED, {"ok": False, "error": text, "reason": reason}, "the registry did not answer: %s" % text
    elif state in ("paused", "held"):
        return EXIT_OK, {"ok": True, "version": running, "held": held, "paused": st.get("paused"), "reason": reason}, \
            "nothing to deploy: %s is held back (%s)" % (held or latest, text or state)
    elif state == "waiting-wave":
        return EXIT_OK, {"ok": True, "version": running, "held": held, "reason": reason}, \
            "nothing to deploy now: %s waits for this host's rollout wave (%s)" % (held or latest, text)
    return None


def follow_deploy(workdir: str, answer: dict, before: dict, timeout: float, args: dict) -> int:
    """After `poll-now`: print what happens as it happens, from what the poller states (never from its prose);
    0 when a new version serves or none is to be deployed now, 1 when it is refused or failed."""
    wanted = answer.get("poll_request")
    quiet = args.get("--json")
    until = time.monotonic() + timeout
    said = set()

    def say(key: str, text: str) -> None:
        if key not in said and not quiet:
            said.add(key)
            print(text, flush=True)

    say("asked", "asking the registry now (running %s)" % (answer.get("version") or "nothing"))
    poller_pid = before.get("poller_pid")
    followed = None   # the version seen being deployed
    shown = False     # a progress bar is on the terminal's current line
    last_done = None  # the byte count of the progress last drawn
    while time.monotonic() < until:
        st = current_status(workdir)
        poller = st.get("poller") or {}
        if st.get("poller_pid") and poller_pid and st["poller_pid"] != poller_pid:
            # A new poller (the last one died, or USR2 re-executed the master) never read our request: ask again.
            try:
                again = send(workdir, "deploy-now")
            except (ControlError, OSError):
                again = {}
            if again.get("ok"):  # else (the master is starting it still) ask again at the next look
                wanted, poller_pid = again.get("poll_request"), st["poller_pid"]
            time.sleep(POLL)
            continue
        poller_pid = st.get("poller_pid") or poller_pid
        state, target = poller.get("state"), poller.get("target")
        if state in ("downloading", "deploying") and target:
            followed = target
        if wanted is None or poller.get("poll_request") != wanted:
            if state in ("downloading", "deploying") and target:
                say("busy", "a deploy of %s is under way: asking the registry once it is done" % target)
            time.sleep(POLL)
            continue
        outcome = _outcome(st, st.get("latest_version"), followed, before)
        if outcome is not None:
            code, result, text = outcome
            if shown:
                shown = end_progress(quiet)
            _print(args, result, text)
            return code
        if state in ("downloading", "deploying") and target:
            say("found", "new version %s: downloading, verifying, unpacking" % target)
            download = st.get("download")
            if isinstance(download, dict) and download.get("version") == target and download.get("done") != last_done:
                last_done = download.get("done")  # the master relays a snapshot a second: draw each once
                shown = show_progress(download, quiet) or shown
            if state == "deploying" and poller.get("reason") == "before-hook":
                say("hook", "running the before-deploy-hook for %s" % target)
            if st.get("state") == "deploying" or poller.get("reason") == "switching":
                if shown:
                    shown = end_progress(quiet)
                say("switch", "switching to %s: generation starting, waiting for it to be ready" % target)
        time.sleep(POLL)
    if shown:
        end_progress(quiet)
    print("dewy: nothing finished within %gs (see dewy status)" % timeout, file=sys.stderr)
    return EXIT_FAILED
