"""Download progress lines (dewy.poller.progress) with a fake clock: when they come and what they say."""

import logging

from dewy.poller.progress import Progress

MIB = 1 << 20


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_every_interval_with_percent_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, "dewy.poller")
    clock = Clock()
    sizes = [None]
    progress = Progress("app.tar.gz", lambda: sizes[0], interval=5.0, clock=clock)
    sizes[0] = 100 * MIB  # the store tells the size once the transfer started
    for _ in range(4):  # 4 MiB a second for 4 s: no line yet
        clock.now += 1
        progress.update(4 * MIB)
    assert not caplog.records
    clock.now += 1
    progress.update(4 * MIB)  # 5 s: 20 MiB of 100
    (record,) = caplog.records
    assert record.getMessage() == "downloading app.tar.gz: 20.0% of 100.0 MiB, 4.00 MiB/s, ETA 20s"
    assert (record.percent, record.eta_s, record.bytes, record.total) == (20.0, 20.0, 20 * MIB, 100 * MIB)
    clock.now += 4.9
    progress.update(MIB)
    assert len(caplog.records) == 1, "the next line comes 5 s after the last one"


def test_without_a_size_it_says_how_much_so_far():
    clock = Clock()
    progress = Progress("x.zip", None, interval=5.0, clock=clock)
    clock.now += 2
    progress.update(3 * MIB)
    snap = progress.snapshot()
    assert (snap["total"], snap["percent"], snap["eta_s"], snap["mib_per_s"]) == (None, None, None, 1.5)


def test_a_small_download_is_told_in_kib_or_bytes_not_as_0_0_mib():
    """Issue 16 item 21: the progress of a 6.7 KiB artifact read `100.0% of 0.0 MiB`."""
    from dewy.poller.progress import describe, size_text

    assert describe({"done": 6881, "total": 6881, "percent": 100.0, "mib_per_s": 2.5, "eta_s": 0}) == \
        "100.0% of 6.7 KiB, 2.50 MiB/s, ETA 0s"
    assert describe({"done": 500, "total": None, "percent": None, "mib_per_s": 0.0, "eta_s": None}) == \
        "500 bytes so far, 0 bytes/s"
    assert [size_text(n) for n in (0, 1023, 1024, 3 * MIB, 5 << 30)] == \
        ["0 bytes", "1023 bytes", "1.0 KiB", "3.0 MiB", "5.00 GiB"]
