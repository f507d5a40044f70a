"""Shared fixtures: the tiny random Llama, the tiny assets, a prepared dataset and a trained adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tuneforge.core.config import load_pipeline

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(scope="session")
def tiny():
    from tuneforge.models import load

    return load("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_config():
    return load_pipeline(ASSETS / "pipeline.yaml")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_config):
    from tuneforge.data.prepare import prepare

    return prepare(tiny_config.data, tiny_config.model, tmp_path_factory.mktemp("ds") / "dataset")


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_config, tiny_dataset):
    from tuneforge.train.loop import train

    cfg = tiny_config.train.model_copy(update={"epochs": 6, "lr": 0.02})
    return train(tiny_dataset, tiny_config.model, cfg, tmp_path_factory.mktemp("ad") / "adapter")


@pytest.fixture
def assets(tmp_path) -> Path:
    """A writable copy of tests/assets."""
    target = tmp_path / "assets"
    shutil.copytree(ASSETS, target)
    return target


@pytest.fixture(scope="session")
def engine_vs_generate():
    """fn(loaded, ids, n) → (the engine's greedy tokens, the model's own `generate` greedy tokens, engine's runner)."""

    def run(loaded, ids: list[int], n: int):
        import torch

        from tuneforge.models.generate import SamplingParams
        from tuneforge.serve.engine.engine import Engine, EngineLimits

        with torch.no_grad():
            x = torch.tensor([ids])
            want = loaded.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                                         eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
        engine = Engine(loaded, EngineLimits(max_num_seqs=2, max_model_len=64)).start()
        try:
            got = list(engine.stream(ids, SamplingParams(max_new_tokens=n, ignore_eos=True)))[-1].token_ids
        finally:
            engine.shutdown()
        return got, want, engine.runner

    return run
