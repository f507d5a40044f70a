"""`tuneforge bench train`: the seed articles' textbook recipe against tuneforge's default, same data.

(a) textbook: Hugging Face `Trainer` + PEFT LoRA r=8 (alpha 32, dropout 0.01) on q_proj/v_proj,
    every sample padded to 256 tokens, fp32, batch 4 — as in the seed article, except that it is
    given tuneforge's learning rate and warmup share (the article's 500 warmup steps and Trainer's
    5e-5 default would never get going on a dataset this size, which would flatter us).
(b) tuneforge: `train()` with the default TrainConfig (LoRA r=16 on all linear layers, packed
    micro-batches of 8 examples, logits only at target positions, bf16 autocast, cosine).

Both see the same rows for the same number of epochs, so the same real (non-padding) tokens.
Each runs in its own child process, so peak RSS (read when training ends, before the held-out
evaluation) is that recipe's alone. Printed: real tokens/s, peak RSS, held-out loss (fp32, same
function for both) and the ratios.
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PAD_TO = 256


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _held_out(model, rows, pad_id) -> float:
    from tuneforge.train.batching import evaluate_loss

    return float(evaluate_loss(model, rows, pad_id, 8, packed=True)["loss"])


def run_textbook(dataset_path: Path, model_name: str, rows: int | None, epochs: int, lr: float,
                 warmup_ratio: float, workdir: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import Trainer, TrainingArguments

    from tuneforge.core.artifacts import load_artifact
    from tuneforge.data.prepare import read_split
    from tuneforge.models import load

    dataset = load_artifact(dataset_path, kind="dataset")
    train_rows = read_split(dataset, "train")[:rows]
    loaded = load(model_name)
    pad_id = loaded.tokenizer.pad_token_id
    records, real = [], 0
    for row in train_rows:
        ids, labels = row["input_ids"][:PAD_TO], row["labels"][:PAD_TO]
        n = len(ids)
        real += n
        records.append({"input_ids": ids + [pad_id] * (PAD_TO - n), "attention_mask": [1] * n + [0] * (PAD_TO - n),
                        "labels": labels + [-100] * (PAD_TO - n)})
    model = get_peft_model(loaded.model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=32,
                                                   target_modules=["q_proj", "v_proj"], lora_dropout=0.01))
    args = TrainingArguments(output_dir=str(workdir / "textbook"), num_train_epochs=epochs,
                             per_device_train_batch_size=4, learning_rate=lr, warmup_steps=warmup_ratio,
                             weight_decay=0.01, report_to=[], save_strategy="no", logging_steps=50,
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(records))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    peak = _peak_rss_gib()  # training's peak, before the held-out evaluation
    return {"recipe": "textbook", "real_tokens": real * epochs, "padded_tokens": len(records) * PAD_TO * epochs,
            "seconds": seconds, "tokens_per_second": real * epochs / seconds,
            "held_out_loss": _held_out(model, read_split(dataset, "validation"), pad_id),
            "peak_rss_gib": peak}


def run_tuneforge(dataset_path: Path, model_name: str, rows: int | None, epochs: int, lr: float,
                  warmup_ratio: float, workdir: Path, method: str = "lora") -> dict[str, Any]:
    from tuneforge.core.artifacts import create_artifact, load_artifact
    from tuneforge.core.config import ModelConfig, TrainConfig
    from tuneforge.data.prepare import read_split
    from tuneforge.data.store import write_split
    from tuneforge.models import load
    from tuneforge.train.loop import train

    dataset = load_artifact(dataset_path, kind="dataset")
    if rows is not None:  # the same first rows the textbook run sees, as a dataset artifact of its own
        subset = workdir / "subset"
        with create_artifact(subset, "dataset", config=dataset.config) as writer:
            for split, limit in (("train", rows), ("validation", None)):
                write_split(writer.path / f"{split}.parquet", read_split(dataset, split)[:limit])
            writer.extra.update({k: dataset.manifest[k] for k in ("tokenizer", "tokenizer_hash",
                                                                  "chat_template_hash") if k in dataset.manifest})
        dataset = load_artifact(subset, kind="dataset")
    cfg = TrainConfig(epochs=epochs, lr=lr, warmup_ratio=warmup_ratio, method=method)  # type: ignore[arg-type]
    artifact = train(dataset, ModelConfig(name=model_name), cfg, workdir / f"tuneforge-{method}")
    assert artifact is not None
    peak = _peak_rss_gib()  # training's peak, before the held-out evaluation loads the adapter again
    gc.collect()
    m = artifact.metrics
    tuned = load(str(artifact.path))
    recipe = "tuneforge" if method == "lora" else f"tuneforge {method}"
    return {"recipe": recipe, "real_tokens": m["tokens_seen"], "padded_tokens": m["tokens_seen"],
            "seconds": m["train_seconds"], "tokens_per_second": m["tokens_seen"] / m["train_seconds"],
            "held_out_loss": _held_out(tuned.model, read_split(dataset, "validation"), tuned.tokenizer.pad_token_id),
            "peak_rss_gib": peak}


def _qlora(*args: Any) -> dict[str, Any]:
    return run_tuneforge(*args, method="qlora")


RECIPES = {"textbook": run_textbook, "tuneforge": run_tuneforge, "qlora": _qlora}


def child_main(argv: list[str]) -> None:
    recipe, dataset, model, rows, epochs, lr, warmup, workdir, out = argv
    result = RECIPES[recipe](Path(dataset), model, int(rows) if rows != "all" else None, int(epochs), float(lr),
                             float(warmup), Path(workdir))
    Path(out).write_text(json.dumps(result))


def run_bench(dataset: Path, model: str, rows: int | None, epochs: int, workdir: Path,
              lr: float = 2e-4, warmup_ratio: float = 0.05, qlora: bool = False) -> list[dict[str, Any]]:
    """Run the recipes, each in a fresh child process; returns their result dicts (textbook first)."""
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for recipe in ["textbook", "tuneforge", *(["qlora"] if qlora else [])]:
        out = workdir / f"{recipe}.json"
        subprocess.run([sys.executable, "-m", "tuneforge.bench.train", recipe, str(dataset), model,
                        str(rows) if rows else "all", str(epochs), str(lr), str(warmup_ratio), str(workdir),
                        str(out)], check=True)
        results.append(json.loads(out.read_text()))
    return results


def render(results: list[dict[str, Any]]) -> str:
    base, ours = results[:2]
    lines = ["| recipe | real tokens | padded tokens | seconds | real tokens/s | peak RSS GiB | held-out loss |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['recipe']} | {r['real_tokens']:,} | {r['padded_tokens']:,} | {r['seconds']:.1f} | "
                     f"{r['tokens_per_second']:.0f} | {r['peak_rss_gib']:.2f} | {r['held_out_loss']:.4f} |")
    lines.append("")
    lines.append(f"speed: **{ours['tokens_per_second'] / base['tokens_per_second']:.2f}×** real tokens/s; "
                 f"peak RSS {ours['peak_rss_gib'] / base['peak_rss_gib']:.2f}× ; "
                 f"held-out loss {ours['held_out_loss']:.4f} vs {base['held_out_loss']:.4f} "
                 f"({'better or equal' if ours['held_out_loss'] <= base['held_out_loss'] else 'worse'})")
    return "\n".join(lines)


if __name__ == "__main__":
    child_main(sys.argv[1:])
