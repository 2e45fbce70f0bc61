"""Deploy and rollback hooks: `sh -c COMMAND` in the workdir, with a timeout and captured output.

before-deploy-hook, after-deploy-hook and after-rollback-hook get the same DEWY_* variables (env()); a hook
that ran is notified either way, as Dewy sends hook results: `hook-failed`, or `hook-succeeded` (quiet drops it).
"""

import os
import select
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from .procgroup import group_alive, signal_group

MAX_OUTPUT = 64 * 1024  # keep this much of a hook's output (stdout + stderr) for logs and the audit
KILL_GRACE = 2.0        # seconds between SIGTERM and SIGKILL to a timed-out hook's process group
_DEFERRED = (signal.SIGTERM, signal.SIGINT)
_AFTER_EXIT = 0.2       # how long to keep reading once the shell has exited (background children may hold the pipe)


@dataclass(frozen=True)
class HookResult:
    """What a hook did: ok, its exit code (None if never run), its output (capped), whether it timed out."""

    ok: bool
    returncode: int | None
    output: str
    timed_out: bool = False
    seconds: float = 0.0  # how long it ran

    def describe(self) -> str:
        """A one-line summary for logs and error messages."""
        if self.timed_out:
            head = "timed out"
        elif self.returncode is not None and self.returncode < 0:
            head = "killed by signal %d" % -self.returncode
        else:
            head = "exit status %s" % self.returncode
        tail = self.output.strip().splitlines()[-1:] if self.output.strip() else []
        return head + (": " + tail[0][:200] if tail else "")


def _stop_group(proc: subprocess.Popen) -> None:
    """TERM the hook's whole process group, KILL it if it lingers, and reap the shell."""
    pgid = proc.pid  # start_new_session: the shell leads its own group
    if signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_alive(pgid):
                break
            time.sleep(0.02)
        signal_group(pgid, signal.SIGKILL)
    proc.wait()


@contextmanager
def _signals_deferred(redeliver: bool = True):
    """Hold SIGTERM/SIGINT for the duration of the block, then deliver them (when redeliver).

    Starting the hook and registering it for cleanup must not be split by a signal whose handler
    raises (the poller's does): the hook would be left running with nobody to kill it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be swapped in the main thread; there are none to fear elsewhere
        return
    caught = []
    previous = {}
    for signum in _DEFERRED:
        handler = signal.getsignal(signum)
        if handler is None:  # installed outside Python: leave it alone
            continue
        previous[signum] = signal.signal(signum, lambda num, _frame: caught.append(num))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if redeliver:
            for signum in caught:
                signal.raise_signal(signum)


def run_hook(command: str, workdir: str, env: dict, timeout: float, keep=()) -> HookResult:
    """Run `sh -c command` in workdir with os.environ + env; kill its process group after timeout seconds.

    dewy's credential variables (dewy.secrets.CREDENTIAL_VARS) are left out, except those named in keep
    (`app-env-keep`): a hook is code from the release, like the app.

    An empty command succeeds without running anything.
    """
    if not command or not command.strip():
        return HookResult(ok=True, returncode=None, output="")
    from dewy import secrets

    started = time.monotonic()
    full_env = secrets.child_environment(os.environ, keep)
    full_env.update({k: "" if v is None else str(v) for k, v in env.items()})
    chunks, kept = [], 0
    timed_out = False
    exited_at = None
    proc = None
    try:
        with _signals_deferred():
            proc = subprocess.Popen(
                ["sh", "-c", command], cwd=workdir, env=full_env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, so a timeout kills everything it started
            )
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                exited_at = exited_at or now
                # The shell is gone; a background child may still hold the pipe open: read what is
                # there briefly instead of waiting for an EOF that may never come.
                if now - exited_at >= _AFTER_EXIT:
                    break
            elif now >= deadline:
                timed_out = True
                break
            wait = min(deadline - now, 0.1) if exited_at is None else _AFTER_EXIT - (now - exited_at)
            ready, _, _ = select.select([fd], [], [], max(wait, 0))
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                if proc.poll() is None:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0))
                break
            if kept < MAX_OUTPUT:  # keep reading past the cap so the hook never blocks on a full pipe
                chunks.append(data[:MAX_OUTPUT - kept])
                kept += len(chunks[-1])
    except subprocess.TimeoutExpired:
        timed_out = True
    except BaseException:
        # Interrupted (SIGTERM to the poller): do not leave the hook running behind us.
        if proc is not None:
            with _signals_deferred(redeliver=False):  # we are unwinding already
                _stop_group(proc)
                proc.stdout.close()
        raise
    if timed_out:
        with _signals_deferred():  # a SIGTERM now must not stop us half way through the kill
            _stop_group(proc)
    proc.stdout.close()
    returncode = proc.wait()
    output = b"".join(chunks).decode("utf-8", errors="replace")
    if kept >= MAX_OUTPUT:
        output += "\n[output truncated at %d bytes]" % MAX_OUTPUT
    return HookResult(ok=not timed_out and returncode == 0, returncode=returncode,
                      output=output, timed_out=timed_out, seconds=time.monotonic() - started)


def env(version: str | None, release_dir: str | None, previous_version: str | None, mode: str) -> dict:
    """The DEWY_* variables every hook gets on top of dewy's own environment."""
    return {"DEWY_VERSION": version or "", "DEWY_RELEASE_DIR": release_dir or "",
            "DEWY_PREVIOUS_VERSION": previous_version or "", "DEWY_MODE": mode}


def report_success(notifier, hook: str, result: HookResult, version: str | None, **fields) -> None:
    """Notify `hook-succeeded` for a hook that ran and succeeded (Dewy notifies hook results either way)."""
    if notifier is not None and result.ok and result.returncode is not None:
        notifier.emit("hook-succeeded", version, hook=hook, output=result.output, seconds=round(result.seconds, 3),
                      **fields)


def run_after_rollback(config, notifier, version: str | None, release_dir: str | None,
                       rolled_back_from: str | None, log) -> HookResult | None:
    """Run after-rollback-hook (if set) once a rollback serves: DEWY_VERSION is what serves now, DEWY_PREVIOUS_VERSION
    the version rolled back from; its result is logged and notified (hook-failed / hook-succeeded)."""
    command = getattr(config, "after_rollback_hook", "")
    if not command:
        return None
    result = run_hook(command, config.workdir, env(version, release_dir, rolled_back_from, config.mode),
                      config.hook_timeout, keep=getattr(config, "app_env_keep", ()))
    if result.output.strip():
        log.info("after-rollback-hook output:\n%s", result.output.rstrip())
    if result.ok:
        report_success(notifier, "after-rollback-hook", result, version, previous_version=rolled_back_from)
    else:
        error = "after-rollback-hook failed (%s)" % result.describe()
        log.warning("%s", error)
        notifier.emit("hook-failed", version, hook="after-rollback-hook", error=error, output=result.output,
                      previous_version=rolled_back_from)
    return result
