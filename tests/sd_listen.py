"""Start a command the way systemd's socket activation does: `python sd_listen.py FD[,FD...] [NAMES] -- CMD...`.

The listening sockets at the given descriptors (inherited from the caller) become fds 3, 4, ... of
CMD, with LISTEN_FDS, LISTEN_FDNAMES (when NAMES, colon-separated, is given) and LISTEN_PID set to
CMD's own pid — which is why this execs instead of spawning: the pid stays the same (sd_listen_fds(3)).
"""

import fcntl
import os
import sys


def main(argv: list) -> None:
    """Move the fds into place, set the environment, exec the command (never returns)."""
    split = argv.index("--")
    fds = [int(fd) for fd in argv[0].split(",")]
    names = argv[1] if split == 2 else ""
    command = argv[split + 1:]
    first_free = 3 + len(fds)
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, first_free) for fd in fds]  # so dup2 cannot clobber one
    for i, fd in enumerate(parked):
        os.dup2(fd, 3 + i, inheritable=True)
        os.close(fd)
    for fd in fds:
        if fd >= first_free:
            os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    if names:
        os.environ["LISTEN_FDNAMES"] = names
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
