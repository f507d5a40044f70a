"""Chat templates. A tokenizer's own template always wins; one without gets DEFAULT_CHAT_TEMPLATE.

The default is ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`), the format most open instruct
models use. Generation with it stops at `<|im_end|>` (see `stop_strings`).
"""

from __future__ import annotations

import hashlib

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
DEFAULT_STOP = "<|im_end|>"


def ensure_chat_template(tokenizer) -> str:
    """Give `tokenizer` the default template when it has none; return 'tokenizer' or 'default'."""
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return "default"


def template_hash(tokenizer) -> str:
    """Short hash of the chat template, recorded in manifests so train and serve can be compared."""
    return hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()[:16]


def stop_strings(tokenizer) -> list[str]:
    """Strings that end an assistant turn besides the EOS token."""
    stops = []
    if tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE or DEFAULT_STOP in (tokenizer.chat_template or ""):
        stops.append(DEFAULT_STOP)
    return stops


def tokenizer_hash(tokenizer) -> str:
    """Short hash of the vocabulary and special tokens: two tokenizers with the same hash encode alike."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = [tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token]
    return hashlib.sha256(repr((vocab, special)).encode()).hexdigest()[:16]
