"""Optional backends and the pip extra each needs: a config naming one whose libraries are missing is a config error.

`pip install dewy-deploy` is the lean base (master, CLI, file://, the log/webhook/mail notifiers); the cloud
SDKs come with extras (`pip install 'dewy-deploy[s3]'`). Without this check a missing SDK would surface only
in the poller, at the first poll, as a registry failure; here it fails `--check` and start-up with exit 2
and the exact command to run. Declared once: setup.cfg's [options.extras_require] holds the same names
(tests/unit/test_packaging.py checks they agree).
"""

import importlib.machinery
import os
import sys

DIST = "dewy-deploy"  # the distribution name on PyPI (`dewy` there is another project)

# extra -> the top-level modules it installs that dewy imports (checked with find_spec: nothing is imported)
EXTRAS = {
    "github": ("jwt", "cryptography"),
    "s3": ("boto3", "botocore"),
    "gcs": ("google.cloud.storage",),
    "grpc": ("grpc", "google.protobuf"),
    "redis": ("redis",),
    "slack": ("slack_sdk",),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.grpc"),  # otlp-endpoint (dewy.poller.otel)
}

# backend module (a SCHEMES row of dewy.registry/artifact/cache/notify) -> the extra it needs
BACKENDS = {
    "dewy.registry.s3": "s3", "dewy.artifact.s3": "s3", "dewy.cache.s3": "s3",
    "dewy.registry.gs": "gcs", "dewy.artifact.gs": "gcs", "dewy.cache.gs": "gcs",
    "dewy.registry.grpc": "grpc",
    "dewy.cache.redis": "redis",
    "dewy.notify.slack": "slack",
}


def _installed(module: str) -> bool:
    """Whether module can be imported here, found on sys.path without importing it or its parent packages."""
    if module in sys.modules:
        return True
    # importlib.util.find_spec("google.cloud.storage") would import google and google.cloud: the lean
    # rule (nothing of an SDK loads while validating a URL) needs a walk that only looks at directories.
    top, _, rest = module.partition(".")
    try:
        spec = importlib.machinery.PathFinder.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    locations = list(spec.submodule_search_locations or ())
    parts = rest.split(".") if rest else []
    for i, part in enumerate(parts):
        packages = [os.path.join(d, part) for d in locations if os.path.isdir(os.path.join(d, part))]
        if not packages:  # a plain module file is enough only for the last part
            return i == len(parts) - 1 and any(os.path.isfile(os.path.join(d, part + suffix))
                                               for d in locations for suffix in importlib.machinery.all_suffixes())
        locations = packages
    return True


def missing(extra: str) -> list:
    """The modules of extra that are not installed (empty when the extra is usable)."""
    return [m for m in EXTRAS[extra] if not _installed(m)]


def install_command(extra: str) -> str:
    """The command that installs extra, as the error message gives it."""
    return "pip install '%s[%s]'" % (DIST, extra)


def require(extra: str, what: str) -> None:
    """Raise ValueError (one line: what needs it, the missing module, the command) unless extra is installed."""
    absent = missing(extra)
    if absent:
        raise ValueError("%s needs the %s extra, which is not installed (no module %s): %s"
                         % (what, extra, absent[0], install_command(extra)))


def require_backend(module: str, scheme: str) -> None:
    """require() for the backend module implementing scheme:// (a no-op for the base backends)."""
    extra = BACKENDS.get(module)
    if extra:
        require(extra, "%s://" % scheme)
