"""Caches: downloaded artifacts and shared registry answers. One module per URL scheme.

`file` (the default: `$DEWY_CACHEDIR`, else `<workdir>/.dewy/cache`) or `file:///abs/dir`;
`memory` / `memory://` (one process only). Shared by a fleet (values on the server, artifacts on local
disk; see dewy/cache/remote.py): `redis://[:password@]host:port/db`, `rediss://...`,
`unix:///path/redis.sock`, `consul://host:port/prefix`, `s3://region/bucket/prefix?endpoint=`,
`gs://bucket/prefix`. Only these take `?registry-ttl=` (the shared
registry answer, dewy/registry/shared.py).
"""

from dewy import urls
from dewy.cache.base import Cache, CacheError, CacheUnavailable

# scheme -> (module, class, allowed query keys); the module is imported only when used.
SCHEMES = {
    "file": ("dewy.cache.file", "FileCache", frozenset()),
    "memory": ("dewy.cache.memory", "MemoryCache", frozenset()),
    "redis": ("dewy.cache.redis", "RedisCache", frozenset({"registry-ttl", "app", "prefix"})),
    "rediss": ("dewy.cache.redis", "RedisCache", frozenset({"registry-ttl", "app", "prefix", "ca"})),
    "unix": ("dewy.cache.redis", "RedisCache", frozenset({"registry-ttl", "app", "prefix", "db", "password"})),
    "consul": ("dewy.cache.consul", "ConsulCache", frozenset({"registry-ttl", "app"})),
    "s3": ("dewy.cache.s3", "S3Cache", frozenset({"registry-ttl", "app", "endpoint", "region"})),
    "gs": ("dewy.cache.gs", "GCSCache", frozenset({"registry-ttl", "app"})),
}
# Caches whose values no other host sees: a shared registry answer makes no sense there.
LOCAL_SCHEMES = ("file", "memory")

__all__ = ["SCHEMES", "Cache", "CacheError", "CacheUnavailable", "validate_url", "from_url"]


def _validate(url: str) -> urls.ParsedURL:
    word, question, _ = url.strip().partition("?")
    if question and word.lower() in LOCAL_SCHEMES:
        # `file?registry-ttl=30s` parses as a URL without a scheme: say what is really wrong.
        raise ValueError("cache = %s takes no query; query keys such as registry-ttl need a cache the fleet "
                         "shares (%s)" % (word, ", ".join(sorted(set(SCHEMES) - set(LOCAL_SCHEMES)))))
    parsed = urls.parse(url)
    if parsed.scheme in LOCAL_SCHEMES and "registry-ttl" in parsed.query:
        raise ValueError('query key "registry-ttl" needs a cache the fleet shares (%s); %s:// keeps answers on '
                         'this host, so there is nothing to share' % (
                             ", ".join(sorted(set(SCHEMES) - set(LOCAL_SCHEMES))), parsed.scheme))
    return urls.validate(url, SCHEMES, "cache")


def validate_url(url: str) -> None:
    """Raise ValueError (one line, listing what is supported) unless url is a usable cache URL."""
    _validate(url)


def from_url(url: str, workdir: str, registry: str = "") -> Cache:
    """Build the cache for url; `workdir` locates the local file cache, `registry` (its URL) names the app's
    keys in a shared cache when the URL has no `?app=`."""
    parsed = _validate(url or "file")
    cls = urls.load_class(SCHEMES, parsed.scheme)
    if getattr(cls, "shared", False):
        return cls(url, workdir=workdir, registry=registry)
    return cls(url or "file", workdir=workdir)
