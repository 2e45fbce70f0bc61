"""Caches: downloaded artifacts and shared registry answers. One module per URL scheme.

`file` (the default: `$DEWY_CACHEDIR`, else `<workdir>/.dewy/cache`) or `file:///abs/dir`;
`memory` / `memory://` (one process only).
"""

from dewy import urls
from dewy.cache.base import Cache, CacheError

# scheme -> (module, class, allowed query keys); the module is imported only when used.
SCHEMES = {
    "file": ("dewy.cache.file", "FileCache", frozenset()),
    "memory": ("dewy.cache.memory", "MemoryCache", frozenset()),
}

__all__ = ["SCHEMES", "Cache", "CacheError", "validate_url", "from_url"]


def validate_url(url: str) -> None:
    """Raise ValueError (one line, listing what is supported) unless url is a usable cache URL."""
    urls.validate(url, SCHEMES, "cache")


def from_url(url: str, workdir: str) -> Cache:
    """Build the cache for url; `workdir` locates the default file cache."""
    parsed = urls.validate(url or "file", SCHEMES, "cache")
    return urls.load_class(SCHEMES, parsed.scheme)(url or "file", workdir=workdir)
