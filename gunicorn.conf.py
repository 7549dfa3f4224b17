"""gunicorn settings; command-line flags (-w, -b) override these."""

import os
import shutil
import tempfile
from pathlib import Path

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

# Prometheus multiprocess mode (app/metrics.py): every worker writes its metrics to files in one
# directory, which /metrics adds up. It must be set before the workers import the app, and must not
# hold a previous run's files. Unset, each start gets a fresh temporary directory of its own.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="relaygate-metrics-")


def on_starting(server):
    # An operator's directory may hold files of a run that ended uncleanly: their counts would be
    # added to this run's. Only prometheus-client's own files are removed.
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
