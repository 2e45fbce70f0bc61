"""The sample app (dewy/demo/app.py) as a WSGI app, so gunicorn runs the same release as dewy.

gunicorn imports `wsgi_app:app` in each worker (no --preload), so a HUP after `current` moved loads the
new release. `$BENCH_APP_DIR` names the release directory (a `current` symlink); its VERSION and
BEHAVIOUR files are read with the sample app's own functions, loaded from the release's app.py.

Endpoints as the sample app: GET / (version), /env (JSON with pid and version), /slow?ms=N, /healthz.
Behaviour `crash-at-start` raises at import (gunicorn: "Worker failed to boot", the master exits);
`crash-after:S` stops the worker gracefully after S seconds (gunicorn starts another).
"""

import importlib.util
import json
import os
import signal
import threading
import time
from urllib.parse import parse_qs

HERE = os.path.realpath(os.environ.get("BENCH_APP_DIR", "."))
_spec = importlib.util.spec_from_file_location("sample_app", os.path.join(HERE, "app.py"))
sample = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sample)

VERSION = sample.read_version(HERE)
BEHAVIOUR = sample.read_behaviour(HERE, os.environ)
STARTED = time.monotonic()

if "crash-at-start" in BEHAVIOUR:
    raise RuntimeError("crash-at-start (release %s)" % VERSION)
if "slow-start" in BEHAVIOUR:
    time.sleep(BEHAVIOUR["slow-start"])
if "crash-after" in BEHAVIOUR:
    # The worker's own graceful stop, as the sample app drains before exiting 4.
    threading.Timer(BEHAVIOUR["crash-after"], os.kill, (os.getpid(), signal.SIGTERM)).start()


def app(environ, start_response):
    """Route GET /, /env, /slow and /healthz like the sample app."""
    path = environ.get("PATH_INFO", "/")
    status, ctype, body = "200 OK", "text/plain; charset=utf-8", VERSION + "\n"
    if path == "/env":
        ctype = "application/json"
        body = json.dumps({"pid": os.getpid(), "version": VERSION, "behaviour": BEHAVIOUR}) + "\n"
    elif path == "/slow":
        try:
            ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["1000"])[0])
        except ValueError:
            ms = 1000
        time.sleep(ms / 1000.0)
    elif path == "/healthz":
        body = "ok\n"
    elif path != "/":
        status, body = "404 Not Found", "not found\n"
    data = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data))), ("Connection", "close")])
    return [data]
