import json

import pytest

from tuneforge.core.config import PipelineConfig, load_pipeline, parse_override, pipeline_schema
from tuneforge.core.errors import ConfigError


def test_defaults_live_in_the_models():
    cfg = load_pipeline(None)
    assert cfg.model.name == "smollm2-135m"
    assert cfg.train.schedule == "cosine"
    assert cfg.stages == ["prepare", "train", "eval", "serve"]


def test_overrides_are_typed():
    cfg = load_pipeline(None, ["train.lr=1e-4", "train.lora.target_modules=[q_proj, v_proj]", "model.name=x/y"])
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.model.name == "x/y"
    assert parse_override("eval.questions=") == (["eval", "questions"], "")


def test_bad_value_names_field_value_and_expectation():
    with pytest.raises(ConfigError) as err:
        load_pipeline(None, ["train.lr=fast", "train.epochs=0"])
    text = str(err.value)
    assert "train.lr: Input should be a valid number" in text and "'fast'" in text
    assert "train.epochs: Input should be greater than or equal to 1 (got 0)" in text


def test_unknown_field_is_an_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="train.learning_rate: unknown field"):
        load_pipeline(path)


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  lr: 1\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"p.yaml:\d+:\d+: invalid YAML"):
        load_pipeline(path)


def test_override_without_equals():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_pipeline(None, ["train.lr"])


def test_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "p.yaml"
    path.write_text("data:\n  files: [a.jsonl]\neval:\n  questions: q.jsonl\n")
    cfg = load_pipeline(path)
    assert cfg.data.files == [tmp_path / "sub" / "a.jsonl"]
    assert cfg.eval.questions == tmp_path / "sub" / "q.jsonl"
    assert str(cfg.output_dir) == "runs"


def test_schema_has_every_section():
    schema = pipeline_schema()
    assert {"model", "data", "train", "eval", "serve"} <= set(schema["properties"])
    json.dumps(schema)
    assert PipelineConfig.model_json_schema()["additionalProperties"] is False
