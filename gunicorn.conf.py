"""gunicorn settings for ChestX: `make serve` runs `gunicorn --config gunicorn.conf.py app:app`.

Sized for a 2-core machine. TensorFlow already spreads one inference over both cores, so more
processes would not make a prediction faster; they would multiply memory (each holds its own
copy of the model) and fight over the same cores. One worker with a few threads keeps pages,
static files and /healthz responsive while a prediction runs (the app runs one TensorFlow call
at a time).

One worker is also what the result store needs: results live in that process's memory, so the
result page and its images must reach the process that analysed the upload. To scale up on a
bigger machine, run several instances (each its own PORT) behind a proxy with sticky sessions,
or replace chestx.web.store.ResultStore with a shared store before raising `workers`.

No preload_app: TensorFlow's thread pools don't survive fork(), so each worker loads the model
itself, once, when it boots (create_app), never per request.
"""

import os
import secrets

bind = f"{os.environ.get('CHESTX_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = 1
worker_class = "gthread"
threads = 4
# Loading TensorFlow and the model takes 10-30 s on 2 cores; a 2000 px upload plus Grad-CAM
# maps queued behind other requests can take several seconds. 120 s covers both.
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
