"""Container mode (`dewy container`, `mode = container`): OCI images run with podman or docker.

A container release is a release directory holding `image.json` (the image pinned by digest, written by
dewy.artifact.img from what dewy.registry.oci found). Its app generation is `python -m
dewy.container.generation SPEC`: it pulls the image, starts the container(s) with their ports published on
127.0.0.1, waits for them to be healthy, proxies dewy's listening sockets to them, tells the master READY=1,
and on the stop signal drains its connections and stops its containers. So deploys, readiness, refusal,
crash-loop rollback, `dewy rollback`, pause, status, history, audit and notifications are the server mode's.
"""
