"""The Arbiter's own decisions, in-process (a real Arbiter; only the fork and the signals are faked)."""

from __future__ import annotations

import signal

from .test_switch import arbiter  # noqa: F401 — the fixture


def test_a_stop_signal_is_never_dropped_and_repeated_signals_coalesce(arbiter):  # noqa: F811
    arb, _ = arbiter
    for _ in range(6):
        arb.queue_signal(signal.SIGHUP, None)
    for _ in range(3):
        arb.queue_signal(signal.SIGUSR1, None)
    arb.queue_signal(signal.SIGTERM, None)
    arb.queue_signal(signal.SIGHUP, None)
    arb.queue_signal(signal.SIGQUIT, None)
    assert list(arb.sig_queue) == [signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGQUIT], \
        "one reload and one restart pending, and both stops kept in order"
    assert arb.sig_queue.popleft() == signal.SIGHUP
    arb.queue_signal(signal.SIGHUP, None)  # arrives once the first was taken: a reload after that one
    assert list(arb.sig_queue) == [signal.SIGUSR1, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP]
