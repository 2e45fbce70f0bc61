"""How dewy starts a Python child of its own (the poller, the demo's master) so that it runs this very code.

`python -m dewy.poller` finds dewy only where a fresh interpreter looks: site-packages or PYTHONPATH. Code
that came from elsewhere — a zipapp (its unpacked site-packages, or a stdlib .pyz imported from the zip
itself), `bin/dewy-master` run from a checkout without install — is on this process's sys.path only, so such
a child could not import dewy (the poller would restart in a loop). Then the child gets the directory dewy
was imported from as an argument and puts it first on its sys.path before running the module; PYTHONPATH is
left alone (the poller's hooks and anything they start must not inherit dewy's libraries).
"""

import os
import sys

import dewy

# -c program: argv[1] is the code root (made a site dir: .pth files of an unpacked site-packages count too, then
# moved to the front so it wins over an installed dewy), argv[2] the module to run as __main__.
_BOOT = ("import runpy, site, sys; p = sys.argv.pop(1); site.addsitedir(p); sys.path.remove(p); "
         "sys.path.insert(0, p); runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")


def code_root() -> str | None:
    """The sys.path entry dewy was imported from, when a fresh interpreter would not find it; else None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(dewy.__file__)))
    real = os.path.realpath(root)
    if real not in {os.path.realpath(p) for p in sys.path if p}:
        return None  # found through an import hook (an editable install's finder): children find it too
    import site  # only here: the master runs with it already loaded, or (python -S) without it

    found_anyway = list(site.getsitepackages()) + [site.getusersitepackages()]
    found_anyway += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if real in {os.path.realpath(p) for p in found_anyway if p}:
        return None
    return root


def module_command(module: str, args=()) -> list:
    """The argv running `python -m module args` with this interpreter and this process's copy of dewy."""
    root = code_root()
    if root is None:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-c", _BOOT, root, module, *args]
