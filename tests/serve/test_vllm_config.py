"""serve.vllm: the engine arguments tuneforge passes to vLLM, checked before any vLLM process starts (these
tests need no vLLM install)."""

from __future__ import annotations

import json

import pytest

from tuneforge.core.config import ServeConfig
from tuneforge.core.errors import TuneforgeError
from tuneforge.serve.engine.vllm import adapter_rank, lora_rank_for


def _adapter(folder, r: int, **extra):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA", **extra}))
    return str(folder)


def test_the_rank_is_derived_from_the_configured_adapters(tmp_path):
    small, big = _adapter(tmp_path / "a", 8), _adapter(tmp_path / "b", 24)
    patterned = _adapter(tmp_path / "c", 8, rank_pattern={"q_proj": 40})
    assert adapter_rank(tmp_path / "c") == 40
    assert lora_rank_for({}, None) == 16  # vLLM's default when nothing is configured
    assert lora_rank_for({"x": small}, None) == 16  # at least 16: a runtime-loaded adapter of 16 still fits
    assert lora_rank_for({"x": small, "y": big}, None) == 32  # rounded up to a rank vLLM accepts
    assert lora_rank_for({"x": patterned}, None) == 64
    assert lora_rank_for({"x": big}, 8) == 8  # asked for: taken as is (load_adapter then refuses the rank 24)
    with pytest.raises(TuneforgeError, match="rank 600, above vLLM's largest max_lora_rank 512"):
        lora_rank_for({"x": _adapter(tmp_path / "d", 600)}, None)


def test_serve_vllm_refuses_ranks_and_arguments_vllm_would_not_take():
    assert ServeConfig().vllm.max_loras == 4 and ServeConfig().vllm.max_lora_rank is None
    assert ServeConfig(vllm={"max_lora_rank": 64, "engine_args": {"enforce_eager": True}}).vllm.max_lora_rank == 64
    with pytest.raises(ValueError, match="24 is not a rank vLLM accepts"):
        ServeConfig(vllm={"max_lora_rank": 24})
    with pytest.raises(ValueError, match="'max_model_len' is set by serve.max_model_len"):
        ServeConfig(vllm={"engine_args": {"max_model_len": 4096}})
    with pytest.raises(ValueError, match="max_loras"):
        ServeConfig(vllm={"max_loras": -1})
