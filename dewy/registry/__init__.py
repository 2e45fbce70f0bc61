"""Registries: where dewy learns the newest release. One module per URL scheme.

A new backend is one more row in SCHEMES (and its module); nothing else changes.
"""

from dewy import urls
from dewy.registry.base import COMMON_KEYS, Registry, RegistryError, Release

# scheme -> (module, class, allowed query keys). The module is imported only when the scheme is used,
# and imports its SDK (requests, boto3, google-cloud-storage, grpcio) only when it is constructed.
SCHEMES = {
    "file": ("dewy.registry.file", "FileRegistry", COMMON_KEYS),
    "ghr": ("dewy.registry.ghr", "GitHubRegistry", COMMON_KEYS),
    "s3": ("dewy.registry.s3", "S3Registry", COMMON_KEYS | {"endpoint", "region"}),
    "gs": ("dewy.registry.gs", "GCSRegistry", COMMON_KEYS),
    "grpc": ("dewy.registry.grpc", "GRPCRegistry", frozenset({"artifact", "calver", "no-tls", "ca"})),
    "img": ("dewy.registry.oci", "OCIRegistry", frozenset({"pre-release", "calver", "insecure", "constraint"})),
}

__all__ = ["SCHEMES", "Registry", "RegistryError", "Release", "validate_url", "from_url"]


def validate_url(url: str) -> None:
    """Raise ValueError (one line, listing what is supported) unless url is a usable registry URL."""
    urls.validate(url, SCHEMES, "registry")


def from_url(url: str, cache=None, slot: str = "") -> Registry:
    """Build the registry for url; `cache` may hold shared answers, `slot` picks build metadata."""
    parsed = urls.validate(url, SCHEMES, "registry")
    return urls.load_class(SCHEMES, parsed.scheme)(url, cache=cache, slot=slot)
