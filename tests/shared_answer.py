"""Test helpers for the shared registry answer: a registry that counts its upstream calls, and a lock
holder that dies mid-refresh (a real process, SIGKILLed while it holds the lock)."""

import signal
import subprocess
import sys
import textwrap
import threading
import time

from dewy.registry.file import FileRegistry

HOLDER = textwrap.dedent("""
    import sys, time
    from dewy import cache
    from dewy.registry.file import FileRegistry
    from dewy.registry.shared import wrap

    class Hanging(FileRegistry):
        def latest(self, exclude=()):
            print("refreshing", flush=True)   # holds the lock now
            time.sleep(60)

    c = cache.from_url(sys.argv[1], sys.argv[2], registry=sys.argv[3])
    wrap(Hanging(sys.argv[3], cache=c), c).latest()
""")


class Counter:
    """Upstream calls made by every CountingRegistry sharing this counter (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # monotonic time of each call

    def add(self):
        """Count one call, now."""
        with self.lock:
            self.calls.append(time.monotonic())

    @property
    def count(self) -> int:
        """How many calls so far."""
        with self.lock:
            return len(self.calls)


class CountingRegistry(FileRegistry):
    """A real file:// registry that counts its upstream calls."""

    def __init__(self, url, counter, **kw):
        super().__init__(url, **kw)
        self.counter = counter

    def latest(self, exclude=()):
        """The file registry's answer, counted."""
        self.counter.add()
        return super().latest(exclude)


def kill_lock_holder(cache_url: str, workdir: str, registry_url: str, script_dir) -> float:
    """Start a host that takes the refresh lock and hangs, SIGKILL it; return when (monotonic) it held it."""
    script = script_dir / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), cache_url, workdir, registry_url],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"refreshing\n"
        locked_at = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    return locked_at


class PollingFleet:
    """Hosts (threads) each polling its own registry wrapper every 50 ms until stopped.

    `last[i]` is host i's last answer (a version), `errors` what failed; `with` stops and joins them.
    """

    def __init__(self, pollers):
        self.pollers = pollers
        self.last = [None] * len(pollers)
        self.errors = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(len(pollers))]
        self.started = None

    def run(self, i: int) -> None:
        """Host i's loop."""
        while not self.stop_event.is_set():
            try:
                self.last[i] = self.pollers[i].latest().version
            except Exception as exc:  # noqa: BLE001 - collected and asserted on by the test
                self.errors.append(repr(exc))
            self.stop_event.wait(0.05)

    def __enter__(self) -> "PollingFleet":
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(10)
        self.elapsed = time.monotonic() - self.started


def ask_together(askers, since: float) -> tuple:
    """Call every asker at once (threads); return (the versions they got, seconds from `since` to each answer)."""
    answers, took = [], []

    def ask(asker):
        answers.append(asker().version)
        took.append(time.monotonic() - since)

    threads = [threading.Thread(target=ask, args=(asker,)) for asker in askers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return answers, took
