"""Dewy's object-store layout, shared by the S3 and GCS registries: `<prefix>/<tag>/<artifact>`.

Every version is a "directory" `<prefix>/<tag>/` holding its artifacts and checksum files. `latest()`
lists the version prefixes (one delimiter listing over every page), picks the newest by the shared
rules, lists that version's objects and reads its checksum file; `report()` writes Dewy's empty
shipped_to record there. A subclass supplies the storage calls (and imports its SDK inside them).
"""

from typing import Iterable

from dewy import checksums
from dewy.registry.base import Registry, RegistryError, Release, inside


def normal_prefix(path: str) -> str:
    """Dewy's prefix form: no leading slash, one trailing slash ("" for the bucket's root)."""
    path = path.strip("/")
    return path + "/" if path else ""


class BucketRegistry(Registry):
    """A registry in a bucket; one client per registry object, made on first use (clients are slow to make)."""

    page_size: int | None = None  # objects per listing request; None: the server's default (1000)
    prefix = ""                    # set by the subclass: normal_prefix() of the URL's path
    where = ""                     # set by the subclass: the registry for messages (no credentials)

    # --- what a store implements ------------------------------------------------------------------

    def make_client(self):
        """A new SDK client for this registry."""
        raise NotImplementedError

    def list_dir(self, prefix: str) -> tuple:
        """(sub-"directory" names, {object name: handle}) directly under prefix, over every page."""
        raise NotImplementedError

    def read_head(self, key: str, handle, limit: int) -> bytes:
        """At most limit bytes of the object key (handle: what list_dir gave for it)."""
        raise NotImplementedError

    def put_empty(self, key: str) -> None:
        """Write an empty text/plain object at key."""
        raise NotImplementedError

    def object_url(self, key: str) -> str:
        """The artifact URL of the object key (Dewy's form)."""
        raise NotImplementedError

    def describe(self, exc: BaseException) -> str:
        """A one-line reason for an SDK failure (never credentials)."""
        raise NotImplementedError

    # --- the layout -------------------------------------------------------------------------------

    def client(self):
        """The SDK client, made on first use and kept."""
        if getattr(self, "_client", None) is None:
            self._client = self.make_client()
        return self._client

    def call(self, what: str, fn, *args):
        """Run one storage call; any failure becomes a one-line RegistryError (the poller backs off)."""
        try:
            return fn(*args)
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - SDK errors (and requests', urllib3's) have no common base
            raise RegistryError("%s: %s: %s" % (self.where, what, self.describe(exc))) from None

    def latest(self, exclude: Iterable[str] = ()) -> Release:
        """The newest version prefix (not excluded), the artifact to deploy from it and its checksum."""
        tags, _ = self.call("cannot list versions", self.list_dir, self.prefix)
        tag = self.newest_tag(tags, exclude, where=self.where)
        version = self.version_of(tag)
        version_prefix = self.prefix + tag + "/"
        _, objects = self.call("cannot list version %s" % tag, self.list_dir, version_prefix)
        names = sorted(objects)
        name = self.pick_artifact(version, names)

        def read(candidate: str) -> str:
            data = self.call("cannot read %s" % candidate, self.read_head, version_prefix + candidate,
                             objects[candidate], checksums.MAX_CHECKSUM_FILE)
            return data.decode("utf-8", "replace")

        sha256, source = self.find_checksum(name, names, read)
        return Release(version=version, tag=tag, artifact_name=name,
                       artifact_url=self.object_url(version_prefix + name), sha256=sha256, checksum_source=source)

    def owns(self, url: str) -> bool:
        """Whether url names an object under this registry's bucket and prefix (as object_url writes it)."""
        mark = "DEWYOBJECT"
        head, _, tail = self.object_url(self.prefix + mark).partition(mark)
        return inside(url, head, tail)

    def report(self, release: Release, shipped) -> None:
        """Write the empty object `<prefix>/<tag>/<shipped_to file>` (Dewy's record) after a successful deploy."""
        filename = self.record_name(shipped)
        if filename is None:
            return
        self.call("cannot write %s" % filename, self.put_empty, self.prefix + release.tag + "/" + filename)
