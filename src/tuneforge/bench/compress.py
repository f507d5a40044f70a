"""`tuneforge bench compress`: the trade-off table of one model's variants, measured in one run.

For the parent (a float model artifact, served in bf16 as `tuneforge serve` does by default) and
every variant given (artifacts from `tuneforge compress …`: int8, int4, nf4, pruned, distilled;
GGUF exports through llama.cpp), each in its own child process so memory figures are its own:

- size on disk: the weight files (safetensors / gguf);
- peak RAM at load: the child's max RSS once the engine is built (Python, torch and 16 × 1024 KV
  cache slots included, the same for every row);
- decode tokens/s in tuneforge's engine: 1 stream, and 16 concurrent streams (a GGUF runs on the
  llamacpp backend: one sequence at a time, so its 16-stream figure is serial), the median of
  `repeat` interleaved rounds, and its ratio to the parent's;
- quality: the artifact's own parity report against its parent (greedy agreement, mean |Δlogit|)
  and, with `--eval PIPELINE`, accuracy on the pipeline's eval sets (domain, general) and the
  delta to the parent.

Written to the output folder: `tradeoff.md`, `tradeoff.json` and `tradeoff.png` (matplotlib).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "Explain what a refund policy is in two sentences.",
    "Write a short, friendly reply to a customer whose parcel is late.",
    "List three tips for writing a clear support ticket.",
    "What is the difference between a warranty and a guarantee?",
]


def weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".gguf", ".bin"))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _decode_rate(engine: Any, tokenizer: Any, streams: int, max_tokens: int) -> float:
    """Output tokens/s of `streams` concurrent greedy generations of `max_tokens` each (EOS ignored)."""
    from tuneforge.models.generate import SamplingParams, render_prompt

    prompts = [tokenizer(render_prompt(tokenizer, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]),
                         add_special_tokens=False)["input_ids"] for i in range(streams)]
    params = SamplingParams(max_new_tokens=max_tokens, ignore_eos=True)
    done = threading.Semaphore(0)
    counts: list[int] = []

    def sink(delta: Any) -> None:
        if delta.finish_reason:
            counts.append(delta.completion_tokens)
            done.release()

    started = time.perf_counter()
    for ids in prompts:
        engine.submit(ids, params, sink)
    for _ in prompts:
        done.acquire()
    return sum(counts) / (time.perf_counter() - started)


def measure(variant: str, max_tokens: int, out: Path) -> None:
    """Child process: load `variant`, measure, write JSON to `out`. The engine loop runs on the main
    thread (as in `tuneforge serve`); the measurements drive it from a second thread."""
    from tuneforge.core.config import ServeConfig
    from tuneforge.serve.server import build_engine

    path = Path(variant.removesuffix("@bf16"))
    gguf = (path / "model.gguf").is_file()  # the parent process verified the artifact; loading checks it again
    result: dict[str, Any] = {"variant": variant, "size_mib": weight_bytes(path) / 2**20}
    cfg = ServeConfig(backend="llamacpp" if gguf else "native", max_num_seqs=16, max_model_len=1024)
    engine = build_engine(str(path), cfg, "bench", loop_in_thread=False)  # native: dtype auto = bf16
    result["peak_ram_mib"] = _peak_rss_mib()
    tokenizer = engine.tokenizer
    rates: dict[str, float] = {}

    def client() -> None:
        try:
            _decode_rate(engine, tokenizer, 1, 8)  # warm-up
            rates["tok_s_1"] = _decode_rate(engine, tokenizer, 1, max_tokens)
            rates["tok_s_16"] = _decode_rate(engine, tokenizer, 16, max_tokens)
        finally:
            engine.shutdown()

    worker = threading.Thread(target=client)
    worker.start()
    engine.run_loop()
    worker.join()
    result.update(rates)
    out.write_text(json.dumps(result))


def run_bench(parent: Path, variants: list[Path], output: Path, max_tokens: int = 64,
              eval_pipeline: Path | None = None, repeat: int = 3) -> list[dict[str, Any]]:
    """Measure the parent (bf16) and every variant, `repeat` rounds interleaved (parent, v1, v2, …, parent,
    v1, …) so a machine that slows down mid-run slows every row alike; each speed is the median of its
    rounds, and `speedup_1` / `speedup_16` its ratio to the parent's."""
    from tuneforge.core.artifacts import load_artifact
    from tuneforge.core.progress import console

    output.mkdir(parents=True, exist_ok=True)
    names = [f"{parent}@bf16", *map(str, variants)]
    artifacts = [load_artifact(Path(name.removesuffix("@bf16"))) for name in names]  # all checked before any run
    runs: list[list[dict[str, Any]]] = [[] for _ in names]
    for round_ in range(repeat):
        for index, variant in enumerate(names):
            console.print(f"measuring {variant}" + (f" (round {round_ + 1}/{repeat})" if repeat > 1 else ""))
            out = output / f".measure-{index}.json"
            subprocess.run([sys.executable, "-m", "tuneforge.bench.compress", variant, str(max_tokens), str(out)],
                           check=True)
            runs[index].append(json.loads(out.read_text()))
            out.unlink()
    rows: list[dict[str, Any]] = []
    for variant, artifact, measured in zip(names, artifacts, runs, strict=True):
        row = dict(measured[0])
        for key in ("peak_ram_mib", "tok_s_1", "tok_s_16"):
            values = [m[key] for m in measured if m.get(key) is not None]
            if values:
                row[key] = statistics.median(values)
                if key != "peak_ram_mib":
                    row[f"{key}_runs"] = values
        comp = artifact.manifest.get("compression", {})
        row["name"] = _name(comp, variant.endswith("@bf16"))
        parity = artifact.metrics.get("parity") if not variant.endswith("@bf16") else None
        if parity:
            row["agreement"], row["mean_logit_diff"] = parity["agreement"], parity["mean_logit_diff"]
        rows.append(row)
    for row in rows:  # rows[0] is the parent
        for key in ("tok_s_1", "tok_s_16"):
            if row.get(key) and rows[0].get(key):
                row[key.replace("tok_s", "speedup")] = row[key] / rows[0][key]
    if eval_pipeline is not None:
        _add_eval(rows, eval_pipeline)
    (output / "tradeoff.json").write_text(json.dumps(rows, indent=2) + "\n")
    (output / "tradeoff.md").write_text(render(rows) + "\n")
    chart(rows, output / "tradeoff.png")
    return rows


def _name(comp: dict[str, Any], cast: bool) -> str:
    if cast:
        return "bf16 (parent, cast at load)"
    op = comp.get("operation", "model")
    if op == "quantize":
        group = comp.get("group_size")
        kept = comp.get("adapter", {}).get("method")  # quantized base, the adapter kept on top
        return (f"{comp.get('method')}" + (f", g{group}" if isinstance(group, int) else "")
                + (f" + {kept} kept" if kept else ""))
    if op == "export":
        return f"GGUF {comp.get('type', comp.get('outtype', ''))} (llama.cpp)"
    if op == "prune":
        return f"pruned {comp.get('method')} {comp.get('sparsity', 0):.2f}"
    if op == "distill":
        return f"distilled, {comp.get('layers_kept')} layers"
    return op


def _add_eval(rows: list[dict[str, Any]], pipeline: Path) -> None:
    """Accuracy on the pipeline's eval sets, each variant loaded in turn (GGUF rows are skipped)."""
    from tuneforge.core.config import load_pipeline
    from tuneforge.eval.evaluate import evaluate_loaded, question_sets
    from tuneforge.models import load

    cfg = load_pipeline(pipeline).eval
    sets = question_sets(cfg)
    for row in rows:
        path = row["variant"].removesuffix("@bf16")
        if (Path(path) / "model.gguf").exists():
            continue
        metrics = evaluate_loaded(load(path, dtype="bfloat16"), row["name"], cfg, sets, [])["metrics"]
        for name in sets:
            row[f"{name}_accuracy"] = metrics.get(f"{name}_accuracy")
    for name in sets:
        key = f"{name}_accuracy"
        for row in rows:
            if row.get(key) is not None and rows[0].get(key) is not None:
                row[f"{name}_delta"] = row[key] - rows[0][key]


def render(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    sets = [k.removesuffix("_accuracy") for k in rows[0] if k.endswith("_accuracy")]
    head = ["variant", "size on disk (MiB)", "peak RAM at load (MiB)", "tok/s, 1 stream", "tok/s, 16 streams",
            "× parent (1 / 16 streams)", "greedy agreement / mean |Δlogit| vs parent"] + [
        f"{s} acc. (Δ)" for s in sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        parity = (f"{r['agreement']:.3f} / {r['mean_logit_diff']:.3f}" if "agreement" in r else "—")
        cells = [r["name"], fmt(r["size_mib"], ".0f"), fmt(r.get("peak_ram_mib"), ".0f"),
                 fmt(r.get("tok_s_1"), ".1f"), fmt(r.get("tok_s_16"), ".1f"),
                 f"{fmt(r.get('speedup_1'), '.2f')} / {fmt(r.get('speedup_16'), '.2f')}", parity]
        for s in sets:
            acc, delta = r.get(f"{s}_accuracy"), r.get(f"{s}_delta")
            cells.append("—" if acc is None else f"{acc:.3f} ({delta:+.3f})" if delta is not None else f"{acc:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path) -> bool:
    """Size vs decode speed (1 and 16 streams), one point per variant; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from tuneforge.core.progress import console

        console.print("[yellow]matplotlib is not installed: no tradeoff.png (pip install matplotlib)[/]")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "tok_s_1", "1 stream"), (axes[1], "tok_s_16", "16 streams")):
        for r in rows:
            if r.get(key) is None:
                continue
            ax.scatter(r["size_mib"], r[key], s=40)
            ax.annotate(r["name"], (r["size_mib"], r[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("size on disk (MiB)")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"tuneforge engine, {title}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    import os

    measure(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
    sys.stdout.flush()
    # The result is on disk. Skip interpreter finalization: once in a full test run the child aborted there
    # ("terminate called without an active exception": a native thread pool torn down at exit).
    os._exit(0)
