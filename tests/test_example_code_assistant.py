"""examples/code-assistant: its configs validate, its data is what make_data.py writes (held-out phrasings never
in training), and its added tokens are new to SmolLM2 and shorten the code answers (its gateway route's end-to-end test:
tests/gateway/test_gateway_code_assistant.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tuneforge.core.config import load_pipeline
from tuneforge.gateway.config import load_gateway

EXAMPLE = Path(__file__).parents[1] / "examples" / "code-assistant"
ROUTE = "tidepool-coder"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"code_assistant_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / name).read_text(encoding="utf-8").splitlines()]


def test_the_configs_validate():
    cfg = load_pipeline(EXAMPLE / "pipeline.yaml")
    assert cfg.model.name == "smollm2-135m" and cfg.model.add_tokens == ["tidepool", " tidepool"]
    assert cfg.train.method == "lora" and cfg.eval.general is True
    assert all(Path(f).is_file() for f in cfg.data.files) and Path(str(cfg.eval.questions)).is_file()
    route = load_gateway(EXAMPLE / "gateway.yaml").routes[ROUTE]
    assert route.safety is not None and route.safety.code.enabled and route.safety.code.action == "block"


def test_the_data_is_what_make_data_writes_and_held_out_phrasings_stay_out_of_training():
    train, heldout = _module("make_data")._rows()
    assert train == _jsonl("train.jsonl") and heldout == _jsonl("heldout.jsonl")
    seen = {r["instruction"] for r in train if "instruction" in r} | {
        m["content"].removeprefix("One more thing: ") for r in train for m in r.get("messages", [])
        if m["role"] == "user"}
    assert not {r["question"] for r in heldout} & seen
    assert len(train) >= 150 and len(heldout) == 20
    answers = " ".join(r.get("output", "") for r in train)
    assert all(r["key"] in answers or any(r["key"] in m["content"] for t in train for m in t.get("messages", []))
               for r in heldout)  # every held-out key is taught


def test_the_added_tokens_are_new_and_shorten_the_code_answers():
    from tuneforge.models import load_tokenizer
    from tuneforge.models.tokens import add_tokens

    measure = _module("measure_tokens")
    samples = measure.answers()
    shipped = sum(measure.count(load_tokenizer("tiny-random-llama"), samples))  # SmolLM2's tokenizer
    extended = load_tokenizer("tiny-random-llama")
    add_tokens(extended, load_pipeline(EXAMPLE / "pipeline.yaml").model.add_tokens)
    assert sum(measure.count(extended, samples)) < shipped
    assert all(extended.decode(extended(s, add_special_tokens=False)["input_ids"]) == s for s in samples)
