import pytest
import torch

from tuneforge.core.errors import ModelLoadError
from tuneforge.models import DEFAULT_CHAT_TEMPLATE, ensure_chat_template, load
from tuneforge.models.chat_template import stop_strings


def test_tiny_random_llama_is_small_and_deterministic(tiny):
    cfg = tiny.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size) == (2, 64)
    assert sum(p.numel() for p in tiny.model.parameters()) == 3_219_776
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        logits = tiny.model(input_ids=ids).logits
    assert logits.shape == (1, 8, 49152)
    torch.testing.assert_close(logits.std(), torch.tensor(0.8017685413360596), rtol=1e-4, atol=1e-6)
    again = load("tiny-random-llama")
    with torch.no_grad():
        torch.testing.assert_close(again.model(input_ids=ids).logits, logits)


def test_tiny_has_real_tokenizer_and_template(tiny):
    tok = tiny.tokenizer
    assert tok.decode(tok("Hello world")["input_ids"]) == "Hello world"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_hf_folder_roundtrip(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.source == "hf-folder"
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, tiny.model(input_ids=ids).logits)


def test_default_chat_template_when_tokenizer_has_none(tiny):
    import copy

    tok = copy.deepcopy(tiny.tokenizer)
    tok.chat_template = None
    assert ensure_chat_template(tok) == "default"
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert stop_strings(tok) == ["<|im_end|>"]
    assert ensure_chat_template(tiny.tokenizer) == "tokenizer"


def test_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not fetch 'someorg/somemodel' from the Hugging Face hub"):
        load("someorg/somemodel")


def test_unresolvable_references(tmp_path):
    with pytest.raises(ModelLoadError, match="not a built-in name .*smollm2-135m"):
        load("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither a tuneforge artifact"):
        load(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="dtype 'int3'"):
        load("tiny-random-llama", dtype="int3")
