"""gunicorn settings; command-line flags (-w, -b) override these."""

import os

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
bind = os.environ.get("BIND", "127.0.0.1:8000")
# Long streams are normal: a DeepSeek answer can think for minutes before its first token.
timeout = 0
graceful_timeout = 30
keepalive = 75
# gunicorn 27 opens a control socket shared by every instance on the machine; we run several.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
