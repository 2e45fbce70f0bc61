"""The Arbiter's own decisions, in-process (a real Arbiter; only the fork and the signals are faked)."""

from __future__ import annotations

import signal

from dewy.config import from_options

from .test_switch import make_arbiter


def test_a_stop_signal_is_never_dropped_and_repeated_signals_coalesce(tmp_path):
    arb = make_arbiter(from_options({"registry": "file:///nowhere", "app": ["app"], "workdir": str(tmp_path)}))
    arb.selector.close()
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


def test_holds_any_finds_a_listener_in_the_leader_or_another_member_of_the_group(tmp_path):
    """The handover's question, asked of real processes: does any process of the group still hold the socket?"""
    import os
    import socket
    import subprocess
    import sys

    from dewy.master.apps import holds_any
    from helpers import wait_until

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    link = {"socket:[%d]" % os.fstat(listener.fileno()).st_ino}
    fd = listener.fileno()
    # The leader keeps the socket until told on stdin; its child (same group) keeps it until killed.
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], pass_fds=[%d])\n"
              "print(child.pid, flush=True)\n"
              "sys.stdin.readline(); os.close(%d); print('closed', flush=True)\n"
              "sys.stdin.readline()\n" % (fd, fd))
    leader = subprocess.Popen([sys.executable, "-c", script], pass_fds=[fd], process_group=0,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child = int(leader.stdout.readline())
        assert holds_any(leader.pid, link)
        leader.stdin.write("\n")
        leader.stdin.flush()
        assert leader.stdout.readline().strip() == "closed"
        assert holds_any(leader.pid, link), "the leader closed it, its child (same group) still holds it"
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: not holds_any(leader.pid, link), 10, "the child's fds to go")
        assert not holds_any(leader.pid, {"socket:[1]"})
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.communicate()
        listener.close()
    assert not holds_any(leader.pid, link), "a group that is gone holds nothing"
