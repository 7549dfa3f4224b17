"""LiteLLM's proxy for the comparison: its own virtualenv, telemetry off, no database, one worker.

It routes the bench's public model id to the fake upstream as a DeepSeek model (LiteLLM's `deepseek/`
provider with `api_base`), and authenticates clients with a master key: with no database that is a
string comparison, the cheapest auth LiteLLM has. Everything else is LiteLLM's default (uvicorn with
uvloop, cost tracking from its bundled price map, its request logging at ERROR level).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from contextlib import ExitStack
from pathlib import Path

from loadgen import BenchError, pinned, status_of
from plan import MODEL
from stack import Server, free_port, wait_for


def version(litellm_bin: Path) -> str:
    python = litellm_bin.parent / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    if not (python.exists() and litellm_bin.exists()):
        raise BenchError(f"LiteLLM is not installed at {litellm_bin}: run `make bench-compare`")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"LiteLLM is not installed in {litellm_bin.parent.parent}: run `make bench-compare`")
    return done.stdout.strip()


def write_config(tmp: Path, fake_port: int, upstream_key: str, master_key: str) -> Path:
    # JSON is YAML, so the config needs no YAML writer here.
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"deepseek/{MODEL}",
                    "api_base": f"http://127.0.0.1:{fake_port}",
                    "api_key": upstream_key,
                },
            }
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": master_key},
    }
    path = tmp / "litellm.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def _env() -> dict[str, str]:
    # A clean environment: no DATABASE_URL (so no database), no telemetry, no network fetch of the price map.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ") if k in os.environ}
    return {
        **base,
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }


def start(
    litellm_bin: Path, tmp: Path, stack_exit: ExitStack, fake_port: int, upstream_key: str, cpus: str, log: Path
) -> tuple[Server, int, str]:
    """Starts the proxy on a free port, pinned to `cpus`; returns it, its port and its master key.
    Its output goes to `log`, which is kept after the run."""
    master_key = "sk-litellm-bench-" + secrets.token_hex(8)
    config = write_config(tmp, fake_port, upstream_key, master_key)
    port = free_port()
    cmd = [*pinned(cpus), str(litellm_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", "1"]
    log.parent.mkdir(parents=True, exist_ok=True)
    proxy = stack_exit.enter_context(Server("LiteLLM proxy", cmd, _env(), log, tmp))

    def ready() -> bool:
        if proxy.proc is not None and proxy.proc.poll() is not None:
            raise BenchError(f"LiteLLM's proxy exited at start: {_last_line(log)} (whole log: {log})")
        return status_of(port, "GET", "/health/liveliness", master_key) == 200

    wait_for(ready, "LiteLLM's proxy", 120)
    return proxy, port, master_key


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
