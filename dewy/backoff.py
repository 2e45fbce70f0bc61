"""Exponential backoff: the one formula for respawns (master) and failing polls (poller)."""


def delay(first: float, failures: int, maximum: float) -> float:
    """Seconds to wait after `failures` consecutive failures: first, 2*first, 4*first... capped at maximum."""
    if failures <= 0:
        return min(first, maximum)
    # Cap the exponent so a long outage cannot overflow the float.
    return min(maximum, first * 2 ** min(failures, 64))
