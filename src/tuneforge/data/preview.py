"""`tuneforge data preview`: show templated samples with the trained tokens highlighted.

Template and masking mistakes (loss on the prompt, no end-of-turn token, a doubled BOS) are among
the most reported fine-tuning bugs; seeing the exact tokens the loss is computed on catches them.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tuneforge.models.lm import IGNORE_INDEX

TRAINED = "bold black on green"
MASKED = "dim"


def render_sample(tokenizer, row: dict[str, Any]) -> Text:
    """One row as rich Text: masked tokens dim, trained tokens highlighted, newlines shown as ↵."""
    text = Text()
    for token_id, label in zip(row["input_ids"], row["labels"], strict=True):
        piece = tokenizer.decode([token_id])
        shown = piece.replace("\n", "↵\n")
        text.append(shown, style=TRAINED if label != IGNORE_INDEX else MASKED)
    return text


def summary(tokenizer, row: dict[str, Any]) -> str:
    trained = sum(1 for label in row["labels"] if label != IGNORE_INDEX)
    ends = "yes" if tokenizer.eos_token_id in [t for t, lab in zip(row["input_ids"], row["labels"], strict=True)
                                               if lab != IGNORE_INDEX] else "NO"
    return (f"{row.get('source', '?')}: {len(row['input_ids'])} tokens, {trained} trained, "
            f"trained tokens include EOS {tokenizer.eos_token!r}: {ends}")
