"""Prune: remove weights from a model artifact's decoder layers, checked against its parent.

- `magnitude`: zero the smallest |w| of every attention/MLP projection, with one threshold over all
  of them (`scope: global`) or the same share in each (`per-layer`). Embeddings, norms and the head
  are kept. The matrices stay dense on disk and in memory: sparsity alone saves nothing on a CPU
  without sparse kernels; it is the input to a sparse runtime or to quantization.
- `2:4`: in every 4 consecutive input weights of a row the 2 smallest are zeroed (50 %), the pattern
  NVIDIA's sparse tensor cores run at up to 2× (`torch.sparse.to_sparse_semi_structured` on CUDA).
- `structured`: whole MLP channels (rows of gate/up, columns of down) and/or query heads (rows of q,
  columns of o; the same number in every KV group, so grouped-query attention keeps its shape) are
  removed by magnitude score. The config shrinks (`intermediate_size`, `num_attention_heads`) and the
  parameter count really drops: a smaller, faster dense model.

Scores are weight magnitudes only (no calibration data). Pruned models usually need a recovery
fine-tune: with `recover` (a prepared dataset) the pruned model is fully fine-tuned on it for
`prune.recover_steps` at `prune.recover_lr` (other settings from `train.*`), its zeros held at zero
(`train.keep_sparsity`), by default distilled from the unpruned parent as well (cross-entropy plus KL
to the parent's logits: Minitron's retraining), before the parity check; the manifest records it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.compress.step import model_source, scratch_beside, teacher_settings, train_copy, write_checked
from tuneforge.core.artifacts import Artifact, load_artifact
from tuneforge.core.config import CompressConfig, EvalConfig, ModelConfig, TrainConfig, default
from tuneforge.core.errors import CompressError
from tuneforge.core.progress import console
from tuneforge.models import LoadedModel, load

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def prune(model_path: str | Path, output: str | Path, cfg: CompressConfig,
          eval_cfg: EvalConfig | None = None, recover: str | Path | None = None,
          train_cfg: TrainConfig | None = None, dtype: str | None = None) -> Artifact:
    """Prune the model at `model_path` as `cfg.prune` says (recovering on `recover` with `train_cfg` in
    `dtype`, default `model.dtype`'s), check it against its parent, write a model artifact."""
    dtype = dtype or default(ModelConfig, "dtype")
    opts = cfg.prune
    dataset = load_artifact(recover, kind="dataset") if recover is not None else None
    source = model_source(model_path)
    if source.kind != "model":
        raise CompressError(f"{source.path} is a {source.kind} artifact; prune a model artifact "
                            "(for an adapter: `tuneforge compress merge` first)")
    previous = source.manifest.get("compression", {})
    if previous.get("operation") == "quantize":
        raise CompressError(f"{source.path} is quantized ({previous.get('method')}); prune its float parent, "
                            "then quantize the pruned model")
    parent = load(source.reference)
    child = load(source.reference)
    layers = decoder_layers(child.model)
    before = parameter_count(child.model)
    spec: dict[str, Any] = {"method": opts.method}
    if opts.method == "magnitude":
        spec.update(scope=opts.scope, sparsity=magnitude(layers, opts.sparsity, opts.scope))
    elif opts.method == "2:4":
        spec.update(pattern="2:4", sparsity=semi_structured(layers))
    else:
        if not opts.targets:
            raise CompressError("compress.prune.targets is empty; name mlp and/or heads")
        child = structured(child, opts.sparsity, opts.targets)
        spec.update(targets=list(opts.targets), sparsity=opts.sparsity)
    spec.update(parameters_before=before, parameters_after=parameter_count(child.model))
    if dataset is None:
        return write_checked(source, parent, child, spec, cfg, output, "prune", eval_cfg=eval_cfg)
    with scratch_beside(output, "recover") as scratch:
        base = train_cfg or TrainConfig()
        teacher = teacher_settings(base, source.reference) if opts.recover_from_parent else None
        # train_copy trains fully; max_steps decides the length (epochs at their bound never bind first)
        recovery = base.model_copy(update={"lr": opts.recover_lr, "max_steps": opts.recover_steps, "epochs": 1000,
                                           "keep_sparsity": True, "distill": teacher})
        console.print(f"recovering the pruned model: {opts.recover_steps} full fine-tuning steps at lr "
                      f"{opts.recover_lr} on {dataset.path.name}, its zeros kept"
                      + (f", distilled from {source.path.name} (T={teacher.temperature}, alpha={teacher.alpha})"
                         if teacher else ""))
        child, trained = train_copy(child, dataset, recovery, dtype, scratch)
        if opts.method != "structured":  # the zeros must have survived training
            after = _zero_share(_matrices(decoder_layers(child.model)))
            if after + 1e-9 < spec["sparsity"]:
                raise CompressError(f"recovery filled pruned weights: sparsity {spec['sparsity']:.4f} → {after:.4f}")
        spec["recovery"] = {"dataset": dataset.content_hash, "steps": trained.metrics.get("steps"),
                            "lr": opts.recover_lr, "val_loss": trained.metrics.get("val_loss"),
                            "distilled_from_parent": teacher is not None}
        return write_checked(source, parent, child, spec, cfg, output, "prune", eval_cfg=eval_cfg)


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a Llama-family model (Llama, Mistral, Qwen2/3, SmolLM2); other shapes refused."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not all(_has(layer, name) for layer in layers for name in PROJECTIONS):
        raise CompressError(f"prune knows Llama-family decoders (q/k/v/o and gate/up/down projections); "
                            f"{type(model).__name__} is not one")
    return list(layers)


def _has(module: Any, dotted: str) -> bool:
    try:
        module.get_submodule(dotted)
    except AttributeError:
        return False
    return True


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are one parameter, counted once


def _matrices(layers: list[Any]) -> list[Any]:
    return [layer.get_submodule(name).weight for layer in layers for name in PROJECTIONS]


def magnitude(layers: list[Any], sparsity: float, scope: str) -> float:
    """Zero the smallest weights in place; returns the share of the projections' weights now zero."""
    import torch

    weights = _matrices(layers)
    with torch.no_grad():
        if scope == "global":
            scores = torch.cat([w.detach().abs().flatten().float() for w in weights])
            k = int(sparsity * scores.numel())
            if k:
                threshold = scores.kthvalue(k).values
                for w in weights:
                    w.masked_fill_(w.abs() <= threshold, 0)
        else:
            for w in weights:
                k = int(sparsity * w.numel())
                if k:
                    threshold = w.detach().abs().flatten().float().kthvalue(k).values
                    w.masked_fill_(w.abs() <= threshold, 0)
    return _zero_share(weights)


def semi_structured(layers: list[Any]) -> float:
    """2:4 in place: of every 4 consecutive inputs of a row, the 2 of smallest |w| are zeroed."""
    import torch

    weights = _matrices(layers)
    for w in weights:
        if w.shape[1] % 4:
            raise CompressError(f"2:4 needs input sizes divisible by 4; a projection has {w.shape[1]}")
    with torch.no_grad():
        for w in weights:
            groups = w.view(w.shape[0], -1, 4)
            smallest = groups.abs().topk(2, dim=-1, largest=False).indices
            groups.scatter_(-1, smallest, 0)
    return _zero_share(weights)


def _zero_share(weights: list[Any]) -> float:
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def structured(loaded: LoadedModel, sparsity: float, targets: list[str]) -> LoadedModel:
    """A smaller model: the lowest-scoring MLP channels and/or query heads removed from every layer."""
    import copy

    import torch

    model = loaded.model
    config = copy.deepcopy(model.config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    layers = decoder_layers(model)
    if "mlp" in targets:
        size = config.intermediate_size
        keep = size - round(sparsity * size)
        if keep < 1:
            raise CompressError(f"compress.prune.sparsity {sparsity} would remove every MLP channel")
        for index, layer in enumerate(layers):
            mlp = layer.mlp
            score = (mlp.gate_proj.weight.float().norm(dim=1) * mlp.up_proj.weight.float().norm(dim=1)
                     * mlp.down_proj.weight.float().norm(dim=0))
            kept = score.topk(keep).indices.sort().values
            prefix = f"model.layers.{index}.mlp."
            for name in ("gate_proj", "up_proj"):
                _take(state, prefix + name, kept, rows=True)
            _take(state, prefix + "down_proj", kept, rows=False)
        config.intermediate_size = keep
    if "heads" in targets:
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        group = heads // kv_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        keep_per_group = group - round(sparsity * group)
        if keep_per_group < 1:
            raise CompressError(f"compress.prune.sparsity {sparsity} would remove every query head of a group "
                                f"({group} per KV head)")
        for index, layer in enumerate(layers):
            attn = layer.self_attn
            q = attn.q_proj.weight.float().view(heads, head_dim, -1)
            o = attn.o_proj.weight.float().view(-1, heads, head_dim)
            score = (q.flatten(1).norm(dim=1) * o.transpose(0, 1).flatten(1).norm(dim=1)).view(kv_heads, group)
            best = score.topk(keep_per_group, dim=1).indices.sort(dim=1).values
            kept_heads = (best + torch.arange(kv_heads)[:, None] * group).flatten()
            kept = (kept_heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
            prefix = f"model.layers.{index}.self_attn."
            _take(state, prefix + "q_proj", kept, rows=True)
            _take(state, prefix + "o_proj", kept, rows=False)
        config.num_attention_heads = kv_heads * keep_per_group
        config.head_dim = head_dim
    smaller = from_state(config, state, next(model.parameters()).dtype, "structured pruning")
    return LoadedModel(smaller, loaded.tokenizer, loaded.ref, loaded.source)


def from_state(config: Any, state: dict[str, Any], dtype: Any, what: str) -> Any:
    """A model of `config` holding exactly `state` (a tied head follows its embeddings)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "rotary" not in k and k != "lm_head.weight"]:
        raise CompressError(f"{what} produced weights that do not fit its config "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()


def _take(state: dict[str, Any], prefix: str, index: Any, rows: bool) -> None:
    """Keep the `index` rows (outputs) or columns (inputs) of a projection's weight (and its bias, for rows)."""
    weight = state[prefix + ".weight"]
    state[prefix + ".weight"] = weight[index].contiguous() if rows else weight[:, index].contiguous()
    if rows and prefix + ".bias" in state:
        state[prefix + ".bias"] = state[prefix + ".bias"][index].contiguous()
