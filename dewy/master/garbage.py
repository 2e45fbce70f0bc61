"""What a poller cut short leaves behind: removed before the next one starts (and at a cold start)."""

import logging
import os

from .. import workdir

log = logging.getLogger("dewy.master")


def remove_half_made(cfg) -> None:
    """After a poller died (or at a cold start): remove the release it was unpacking (`releases/<ts>.tmp`)
    and, in the workdir's own cache, the download it was writing (`.tmp.*`). Nobody else writes there (one
    poller per workdir, none running now), so they are garbage; a shared or $DEWY_CACHEDIR cache is left to
    its own stale-file sweep."""
    import shutil  # only here: a poller that dies is rare
    releases = os.path.join(cfg.workdir, "releases")
    places = [(releases, lambda name: name.endswith(".tmp") and name[:1].isdigit())]
    if cfg.cache in ("", "file") and not os.environ.get("DEWY_CACHEDIR"):
        places.append((workdir.state_path(cfg.workdir, "cache"), lambda name: name.startswith(".tmp.")))
    for directory, half_made in places:
        try:
            names = [n for n in os.listdir(directory) if half_made(n)]
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                log.info("removed %s, left half-made by the poller", path)
            except OSError as exc:
                log.warning("cannot remove %s, left half-made by the poller: %s", path, exc)
