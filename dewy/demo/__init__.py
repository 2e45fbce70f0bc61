"""The sample application dewy deploys in `dewy demo` and in the integration tests.

`app.py` is a self-contained, stdlib-only HTTP server that is copied verbatim into release
tarballs (see `app.build_release`); `demo.py` is `dewy demo`, a live zero-downtime deploy.
"""
