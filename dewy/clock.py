"""Wall-clock timestamps as dewy writes them: ISO 8601 in UTC with a `Z`, one format everywhere.

The status file, the audit log, the release manifest, log lines and messages all show times this way,
so they can be compared and sorted as text (`2026-11-26T06:50:12Z`; log lines add milliseconds).
"""

import time


def utc_iso(when: float | None = None, millis: bool = False) -> str:
    """`when` (epoch seconds; default now) as ISO 8601 UTC, e.g. 2026-11-26T06:50:12Z.

    millis=True adds milliseconds (2026-11-26T06:50:12.123Z), truncated, never rounded up into the
    next second.
    """
    if when is None:
        when = time.time()
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    if millis:
        text += ".%03d" % int((when % 1) * 1000)
    return text + "Z"
