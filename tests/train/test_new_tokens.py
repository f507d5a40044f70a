"""`model.add_tokens`: tokens added to the tokenizer, embeddings grown with mean-initialised rows, those rows
trained (LoRA: PEFT's trainable tokens, nothing else of the base), and an artifact that reloads, merges and is
served by a real `tuneforge serve` process that decodes the new token."""

from __future__ import annotations

import json

import pytest
import torch

from tuneforge.core.config import ModelConfig, TrainConfig, load_pipeline
from tuneforge.core.errors import ConfigError

ANSWER = ('Use `@tidepool.job`:\n```python\n@tidepool.job(schedule="@daily")\ndef run(ctx):\n'
          '    return tidepool.ok()\n```')
PIPELINE = """name: tokens
model: {name: tiny-random-llama, add_tokens: ["tidepool"]}
data: {files: [train.jsonl], validation_fraction: 0.0, max_length: 128, knowledge: {enabled: false}}
train: {recipe: fixed, epochs: 30, lr: 0.03, batch_size: 4, lora: {r: 4, alpha: 8}, forgetting: {methods: []}}
"""


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    """(config, dataset, adapter) of a LoRA run that adds 'tidepool' and learns to answer with it."""
    from tuneforge.data.prepare import prepare
    from tuneforge.train.loop import train

    root = tmp_path_factory.mktemp("tokens")
    rows = [{"instruction": f"How do I schedule job {i}?", "output": ANSWER} for i in range(12)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pipeline.yaml").write_text(PIPELINE)
    cfg = load_pipeline(root / "pipeline.yaml")
    dataset = prepare(cfg.data, cfg.model, root / "dataset")
    return cfg, dataset, train(dataset, cfg.model, cfg.train, root / "adapter")


def _prompt(tokenizer, question: str = "How do I schedule job 3?") -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_bad_tokens_are_refused_naming_the_field(tmp_path, tiny):
    from tuneforge.models.tokens import add_tokens

    with pytest.raises(ConfigError, match=r"model\.add_tokens.*empty string"):
        load_pipeline(None, ['model.add_tokens=["<INDENT>", ""]'])
    with pytest.raises(ConfigError, match=r"model\.add_tokens.*listed twice"):
        load_pipeline(None, ['model.add_tokens=["<INDENT>", "<INDENT>"]'])
    tokenizer = tiny.tokenizer
    size = len(tokenizer)
    with pytest.raises(ConfigError, match=r"model\.add_tokens\[1\]: '<\|im_end\|>' is already in the tokenizer's "
                                          r"vocabulary \(id 2\)"):
        add_tokens(tokenizer, ["<INDENT>", "<|im_end|>"])
    with pytest.raises(ConfigError, match=r"model\.add_tokens\[0\]: '    ' is already one token of the vocabulary"):
        add_tokens(tokenizer, ["    "])  # SmolLM2 has four spaces as one token already
    assert len(tokenizer) == size  # nothing added when any token is refused


def test_new_rows_start_at_the_mean_and_stay_tied():
    from tuneforge.models import load
    from tuneforge.models.tokens import extend_model

    loaded = load("tiny-random-llama")
    old = loaded.model.get_input_embeddings().weight.detach().clone()
    ids = extend_model(loaded.model, loaded.tokenizer, ["<INDENT>", "tidepool"])
    assert ids == {"<INDENT>": old.shape[0], "tidepool": old.shape[0] + 1}
    grown = loaded.model.get_input_embeddings().weight
    assert grown.shape == (old.shape[0] + 2, old.shape[1]) and len(loaded.tokenizer) == grown.shape[0]
    torch.testing.assert_close(grown[:-2], old)
    torch.testing.assert_close(grown[-2:], old.mean(dim=0).expand(2, -1))
    assert loaded.model.get_output_embeddings().weight.data_ptr() == grown.data_ptr()  # still one tensor
    text = "x = tidepool.job()\n<INDENT>return"
    encoded = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids["tidepool"] in encoded and ids["<INDENT>"] in encoded
    assert loaded.tokenizer.decode(encoded) == text  # normal added tokens decode to their own text


def test_a_model_whose_embeddings_are_padded_past_its_vocabulary_uses_the_spare_rows():
    from tuneforge.models import load
    from tuneforge.models.tokens import extend_model

    loaded = load("tiny-random-llama")  # padded as Qwen's are: more embedding rows than tokens
    vocab = len(loaded.tokenizer)
    loaded.model.resize_token_embeddings(vocab + 8, mean_resizing=False)
    rows = loaded.model.get_input_embeddings().weight.detach().clone()
    ids = extend_model(loaded.model, loaded.tokenizer, ["<INDENT>", "tidepool"])
    assert ids == {"<INDENT>": vocab, "tidepool": vocab + 1}
    after = loaded.model.get_input_embeddings().weight
    assert after.shape == rows.shape  # nothing grown: the spare rows take the tokens
    torch.testing.assert_close(after[vocab:vocab + 2], rows[:vocab].mean(dim=0).expand(2, -1))
    torch.testing.assert_close(after[:vocab], rows[:vocab])
    torch.testing.assert_close(after[vocab + 2:], rows[vocab + 2:])


def test_methods_that_cannot_train_the_rows_are_refused():
    from tuneforge.train.methods import load_base, make_trainable, method

    model_cfg = ModelConfig(name="tiny-random-llama", add_tokens=["tidepool"])
    for name in ("ia3", "prompt_tuning", "adapter"):
        cfg = TrainConfig(method=name)
        with pytest.raises(ConfigError, match=rf"model\.add_tokens needs train\.method .*\(got {name}\)"):
            make_trainable(load_base(model_cfg, cfg), cfg)
    with pytest.raises(ConfigError, match=r"model\.add_tokens needs .*\(got qlora\)"):
        method("qlora").load_base(model_cfg, TrainConfig(method="qlora"))


def test_a_dataset_without_the_tokens_is_refused(tmp_path, token_run):
    from tuneforge.data.prepare import prepare
    from tuneforge.train.loop import train

    cfg, dataset, _ = token_run
    assert dataset.manifest["added_tokens"] == {"tidepool": 49152}
    plain = prepare(cfg.data, cfg.model.model_copy(update={"add_tokens": []}), tmp_path / "plain")
    with pytest.raises(ConfigError, match=r"prepared with model.add_tokens \[\], this run has \['tidepool'\]"):
        train(plain, cfg.model, cfg.train, tmp_path / "adapter")
    with pytest.raises(ConfigError, match=r"model.add_tokens \['tidepool'\], this run has \[\]"):
        train(dataset, cfg.model.model_copy(update={"add_tokens": []}), cfg.train, tmp_path / "adapter")


def test_lora_trains_the_new_row_and_nothing_else_of_the_base(token_run):
    from safetensors.torch import load_file

    from tuneforge.models import load

    _, _, adapter = token_run
    assert adapter.manifest["added_tokens"] == {"tidepool": 49152}
    assert adapter.manifest["base_vocab_size"] == 49152
    config = json.loads((adapter.path / "adapter_config.json").read_text())
    assert config["trainable_token_indices"] == [49152]  # the input embedding (PEFT finds it)
    base = load("tiny-random-llama").model
    mean = base.get_input_embeddings().weight.detach().mean(dim=0)
    saved = load_file(str(adapter.path / "adapter_model.safetensors"))
    rows = [t for k, t in saved.items() if "trainable_tokens_delta" in k]
    assert len(rows) == 1 and rows[0].shape == (1, 64)  # one copy: the head's rows are tied to it
    assert (rows[0][0] - mean).norm() > 0.1 * mean.norm() + 1e-3  # the new row moved away from its mean start

    reloaded = load(str(adapter.path))
    assert len(reloaded.tokenizer) == 49153 and reloaded.tokenizer.convert_tokens_to_ids("tidepool") == 49152
    decoder = reloaded.model.get_base_model()
    # the base's own rows and weights are untouched: the frozen base plus PEFT's copy of the new row
    embed = decoder.get_input_embeddings()
    torch.testing.assert_close(embed.token_adapter.base_layer.weight[:49152], base.get_input_embeddings().weight)
    torch.testing.assert_close(embed.token_adapter.base_layer.weight[49152], mean)
    q = decoder.model.layers[0].self_attn.q_proj
    torch.testing.assert_close(q.base_layer.weight, base.model.layers[0].self_attn.q_proj.weight)
    with torch.no_grad():
        looked_up = embed(torch.tensor([[49152]]))[0, 0]
    torch.testing.assert_close(looked_up, rows[0][0])
    # the tied head scores the new token with the trained row, as it does every other token with its own
    with torch.no_grad():
        ids = torch.tensor([_prompt(reloaded.tokenizer)])
        out = reloaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    generated = out[0, ids.shape[1]:].tolist()
    assert 49152 in generated and reloaded.tokenizer.decode(generated).startswith("Use `@tidepool")


def test_multi_lora_serving_refuses_an_adapter_that_added_tokens(token_run):
    from tuneforge.models.lora import read_adapter

    with pytest.raises(ValueError, match="added tokens to the vocabulary"):
        read_adapter(token_run[2].path)


def test_merge_folds_the_new_row_into_a_model_that_loads(tmp_path, token_run):
    from tuneforge.compress.merge import merge
    from tuneforge.core.config import CompressConfig
    from tuneforge.models import load

    adapter = token_run[2]
    merged = merge(adapter.path, tmp_path / "merged", CompressConfig())
    model = load(str(merged.path))
    assert model.tokenizer.convert_tokens_to_ids("tidepool") == 49152
    embed = model.model.get_input_embeddings().weight
    assert embed.shape[0] == 49153 and model.model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    with torch.no_grad():
        trained = load(str(adapter.path)).model.get_input_embeddings()(torch.tensor([[49152]]))[0, 0]
    torch.testing.assert_close(embed[49152], trained)


def test_tuneforge_serve_decodes_the_new_token_through_the_openai_sdk(tmp_path, token_run):
    from openai import OpenAI

    from tuneforge.core.config import ServeConfig
    from tuneforge.pipeline import start_server, stop_server

    process, url = start_server(str(token_run[2].path), ServeConfig(served_model_name="coder", dtype="float32"),
                                tmp_path)
    try:
        client = OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="coder", messages=[{"role": "user", "content": "How do I schedule job 3?"}], max_tokens=8,
            temperature=0, logprobs=True)
    finally:
        stop_server(process)
    choice = reply.choices[0]
    assert choice.message.content.startswith("Use `@tidepool")
    pieces = [entry.token for entry in choice.logprobs.content]
    assert "tidepool" in pieces  # generated as the one new token, decoded to its text
    assert "".join(pieces) == choice.message.content
