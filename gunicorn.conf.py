"""gunicorn settings for ChestX: `make serve` runs `gunicorn --config gunicorn.conf.py app:app`.

Sized for a 2-core machine (bench/serving.py measures it; docs/performance.md has the figures).
The model runs on OpenVINO (else ONNX Runtime) through a SessionPool (chestx/session_pool.py):
a lone upload gets every core, which is the fastest answer for one image; concurrent uploads get
one core each, side by side, which gets more images per second through than taking turns on
all cores. More processes would not make a prediction faster; they would multiply memory and
fight over the same cores. One worker with a few threads lets the decoding, checking and
preprocessing of other uploads (and pages, static files, /healthz) run while predictions are
in the model, so the model never waits for input.

One worker is also what the in-memory result cache wants: the result page and its images reach
the process that analysed the upload. To scale up on a bigger machine, raise `workers` with
CHESTX_THREADS=<cores per worker> so workers don't oversubscribe the cores.

No preload_app: each worker compiles its own model (under a second with OpenVINO's cache in
.cache/openvino, no TensorFlow: the first answer comes within 3 s of starting), never per request.
"""

import os
import secrets

bind = f"{os.environ.get('CHESTX_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = 1
worker_class = "gthread"
threads = 4
# Start-up is about 2 s, but a model.h5 without its ONNX form is converted at start-up (30-60 s
# with TensorFlow); a 2000 px upload queued behind others can take seconds. 120 s covers both.
timeout = 120
graceful_timeout = 30
keepalive = 5
preload_app = False
# gunicorn 27's control socket ($HOME/.gunicorn/gunicorn.ctl) is shared by every instance run by
# one user; ChestX doesn't use it, and two instances (tests, several ports) would collide.
control_socket_disable = True

# The access log shows methods, paths (random result ids, never file names) and statuses.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("CHESTX_LOG_LEVEL", "info")

# One secret key for every worker of this server (forms rendered by one validate in another),
# random per start unless CHESTX_SECRET_KEY is set. Workers inherit it when they fork.
os.environ.setdefault("CHESTX_SECRET_KEY", secrets.token_hex(32))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
