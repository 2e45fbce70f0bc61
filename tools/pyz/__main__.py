"""Bootstrap of dewy-<version>.pyz (tools/build-dist writes NAME and BUILD_ID below into the zipapp's copy).

The zip holds this file and site-packages.zip (stored; inside it site-packages/: dewy and every library,
byte-compiled): two entries only, since Python keeps the directory of the zip it runs in memory for the
process's life, and ten thousand library files would cost the long-lived master megabytes. Libraries with C extensions cannot be
imported from a zip, so the first run unpacks site-packages/ once per build into
$DEWY_PYZ_DIR (default $XDG_CACHE_HOME/dewy or ~/.cache/dewy; the systemd unit sets /var/cache/dewy) as
<NAME>_<BUILD_ID>/, then every run puts that directory first on sys.path and runs dewy.pyz:main. A new file
is a new BUILD_ID (a hash of its contents), so after replacing the .pyz a re-exec (USR2) runs the new code.
Lean on purpose: a run that finds its directory unpacked imports nothing beyond what Python starts with (the
unpacking happens in a forked child, whose zipfile and compileall go with it), so dewy-master from the zipapp
holds no more memory than an installed one.
"""

import os
import sys

NAME = "dewy"
BUILD_ID = "dev"


def _unpack_dir() -> str:
    base = os.environ.get("DEWY_PYZ_DIR")
    if not base:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(cache, "dewy")
    return os.path.abspath(os.path.join(base, "%s_%s" % (NAME, BUILD_ID)))


def _unpack(archive: str, target: str) -> None:
    """Extract site-packages/ of archive into target (aside first, then one rename: never half a directory)."""
    import shutil
    import tempfile
    import zipfile

    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s-unpacking-" % NAME, dir=parent)
    try:
        with zipfile.ZipFile(archive) as outer, outer.open("site-packages.zip") as payload:
            with zipfile.ZipFile(payload) as zf:
                zf.extractall(tmp, [n for n in zf.namelist() if n.startswith("site-packages/")])
        # The poller may run as another user (the ini's `user`): it must read all of it, whatever the umask.
        for path, dirs, files in os.walk(tmp):
            os.chmod(path, 0o755)
            for name in files:
                os.chmod(os.path.join(path, name), 0o644)
        try:
            os.rename(tmp, target)
        except OSError:
            if not os.path.isdir(os.path.join(target, "site-packages")):  # another run was faster: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Unpack (once) and run dewy."""
    archive = os.path.dirname(os.path.abspath(__file__))
    target = _unpack_dir()
    site_packages = os.path.join(target, "site-packages")
    if not os.path.isdir(site_packages):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _unpack(archive, target)
            except BaseException as exc:  # noqa: BLE001 — reported by the parent's exit message
                sys.stderr.write("dewy: cannot unpack %s into %s: %s\n" % (archive, target, exc))
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status:
            sys.exit("dewy: set DEWY_PYZ_DIR to a writable directory to run this zipapp")
    import site

    site.addsitedir(site_packages)  # .pth files count (namespace packages)
    sys.path.remove(site_packages)
    sys.path.insert(0, site_packages)
    from dewy.pyz import main as dewy_main

    sys.exit(dewy_main())


main()
