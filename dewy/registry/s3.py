"""`s3://<region>/<bucket>/<prefix>?endpoint=URL&artifact=&pre-release=&calver=`: releases in S3.

Dewy's URL split: the host is the region, the first path segment the bucket, the rest the prefix;
the layout (`<prefix>/<tag>/<artifact>`, shipped_to records) is dewy/registry/bucket.py's. Versions
are listed with `list_objects_v2(Delimiter="/")` through boto3's paginator. `endpoint` (or
AWS_ENDPOINT_URL) selects a compatible server with path-style addressing; credentials come from
boto3's standard chain (dewy/artifact/s3.py makes the client).
"""

from dewy import urls
from dewy.artifact import s3 as s3_artifact
from dewy.registry.bucket import BucketRegistry, normal_prefix

EXAMPLE = "s3://eu-west-1/my-bucket/releases?artifact=app_linux_amd64.tar.gz"


class S3Registry(BucketRegistry):
    """A registry in an S3 bucket (or an S3-compatible store)."""

    @classmethod
    def validate(cls, parsed: urls.ParsedURL) -> None:
        """Raise ValueError for a missing region or bucket, a bad endpoint or a bad common query value."""
        s3_artifact.split_url(parsed, "registry", EXAMPLE)
        s3_artifact.check_endpoint(parsed)
        super().validate(parsed)

    def __init__(self, url: str, cache=None, slot: str = ""):
        super().__init__(url, cache=cache, slot=slot)
        self.region, self.bucket, rest = s3_artifact.split_url(self.parsed, "registry", EXAMPLE)
        self.prefix = normal_prefix(rest)
        self.endpoint = s3_artifact.check_endpoint(self.parsed)
        self.where = "s3://%s/%s/%s" % (self.region, self.bucket, self.prefix)

    def make_client(self):
        """A boto3 client without retries and with the registry's timeouts: a failed call is a failed poll,
        and the poller backs off."""
        return s3_artifact.make_client(self.region, self.endpoint, attempts=1, connect_timeout=self.timeout[0],
                                       read_timeout=self.timeout[1])

    def list_dir(self, prefix: str) -> tuple:
        """(sub-"directory" names, {object name: None}) directly under prefix, over every page."""
        paginator = self.client().get_paginator("list_objects_v2")
        config = {"PageSize": self.page_size} if self.page_size else {}
        dirs, names = [], {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/", PaginationConfig=config):
            if "Name" not in page and "KeyCount" not in page:
                # botocore reads any 200 (a proxy's HTML page, say) as a listing of nothing: say what it was.
                kind = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-type") or "none"
                raise ValueError("a malformed answer: not an S3 listing (Content-Type %s)" % kind)
            dirs.extend(common["Prefix"][len(prefix):].rstrip("/") for common in page.get("CommonPrefixes") or ())
            names.update((obj["Key"][len(prefix):], None) for obj in page.get("Contents") or ())
        names.pop("", None)  # a console's "directory" marker
        return [d for d in dict.fromkeys(dirs) if d], names

    def read_head(self, key: str, handle, limit: int) -> bytes:
        """At most limit bytes of the object."""
        body = self.client().get_object(Bucket=self.bucket, Key=key)["Body"]
        with body:
            return body.read(limit)

    def put_empty(self, key: str) -> None:
        """PutObject an empty text/plain body."""
        self.client().put_object(Bucket=self.bucket, Key=key, Body=b"", ContentType="text/plain")

    def object_url(self, key: str) -> str:
        """Dewy's `s3://<region>/<bucket>/<key>[?endpoint=URL]`."""
        return s3_artifact.artifact_url(self.region, self.bucket, key, self.endpoint)

    def describe(self, exc: BaseException) -> str:
        """boto3's failure in one line."""
        return s3_artifact.describe(exc)
