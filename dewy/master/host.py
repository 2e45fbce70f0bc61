"""What the generation lifecycle asks of the process around it: the Host interface (and CommandError).

The master implements it in apps.AppHost (real processes); the unit tests fake it (no processes).
"""

from .generation import Generation


class CommandError(Exception):
    """The app command cannot be executed at all: a configuration error, not the release's fault."""


class Host:
    """What the lifecycle asks of the process around it. The Arbiter implements it; tests fake it."""

    def spawn(self, gen: Generation) -> int:
        """Start the app for gen (listeners as fds 3.., gen's release); its pid. CommandError, OSError."""
        raise NotImplementedError

    def signal(self, pid: int, sig: int) -> bool:
        """Signal the process group pid; False when nothing is left of it."""
        raise NotImplementedError

    def group_alive(self, pid: int) -> bool:
        """Whether any process of the group pid is left."""
        raise NotImplementedError

    def tell_poller(self, type_: str, **fields) -> None:
        """Send a message to the poller (dropped when there is none)."""

    def ready(self) -> None:
        """The app serves (or dewy itself is up and keeps retrying it): tell systemd."""

    def changed(self) -> None:
        """Something the status file shows changed: rewrite it."""

    def record(self) -> None:
        """Write the status file now and durably (fsync'd file and directory): `current` moves next, and a
        master killed after that must find the record. OSError when it cannot be written."""

    def upgrade(self) -> None:
        """Run the in-place upgrade that waited for a starting generation to settle."""

    def listening(self, pid: int) -> bool:
        """Whether any process of the group pid still holds one of the listening sockets (so may still take
        new connections); False once none does, or nothing is left of the group."""
        raise NotImplementedError

    def probe(self, gen: Generation, path: str, timeout: float) -> None:
        """Start GET path on the first TCP listener, counted only if gen's processes accept it; answer
        with lifecycle.health.probe_done(gen, outcome, detail) (httpprobe.OK / FAILED / OTHER) later."""
        raise NotImplementedError

    def explain(self, pid: int, why: str) -> str:
        """why a generation failed, with what its process pid last wrote to stderr when the host has that."""
        return why

    def switched_back(self, from_version: str | None, to_version: str | None) -> None:
        """`dewy rollback` finished: from_version must not come back (until a newer one is published)."""
