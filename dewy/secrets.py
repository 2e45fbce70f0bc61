"""The credentials dewy knows, kept from the app and the hooks; their values masked in what the app writes.

`CREDENTIAL_VARS` lists every environment variable that holds (or points at) a credential of one of dewy's
backends, whether or not this host configures that backend: the master's environment (the unit's
`EnvironmentFile`) is dewy's, not the app's. `child_environment(environ, keep)` is the environment the app
generations and the hooks get: without those variables, except the ones `app-env-keep` names on purpose.
`values(environ)` are the secret values to mask in the app's stderr copied to the journal.

Stdlib only and no imports beyond `os`: the long-lived master uses it (ARCHITECTURE.md, "Lean rule").
"""

import os

CREDENTIAL_VARS = (
    # GitHub (registry, artifacts, shipped_to uploads)
    "GITHUB_TOKEN", "GH_TOKEN", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_PATH",
    # S3 (boto3's credential variables)
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
    # Google Cloud Storage
    "GOOGLE_APPLICATION_CREDENTIALS",
    # Consul cache
    "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_AUTH",
    # notifiers
    "SLACK_TOKEN", "MAIL_PASSWORD", "DEWY_WEBHOOK_SECRET",
    # dewy's own: the fleet's cache key, the deploy trigger
    "DEWY_CACHE_KEY", "DEWY_TRIGGER_TOKEN", "DEWY_TRIGGER_SECRET",
)
_MIN_SECRET = 6  # shorter values are too likely to occur by chance in ordinary output


def child_environment(environ=None, keep=()) -> dict:
    """A copy of environ (default os.environ) without CREDENTIAL_VARS, except those named in keep."""
    environ = os.environ if environ is None else environ
    dropped = set(CREDENTIAL_VARS) - set(keep)
    return {k: v for k, v in environ.items() if k not in dropped}


def values(environ=None) -> list:
    """The values (longest first) of CREDENTIAL_VARS and of secret-named variables (dewy.log's rule) in
    environ: what the app's output must not carry to the journal."""
    from dewy.log import secret_values

    environ = os.environ if environ is None else environ
    found = {environ[k] for k in CREDENTIAL_VARS if len(environ.get(k) or "") >= _MIN_SECRET}
    if environ is os.environ:
        found.update(secret_values())
    return sorted(found, key=len, reverse=True)
