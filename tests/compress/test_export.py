"""GGUF export through llama.cpp's own converter, checked by running the GGUF in llama.cpp."""

import json

import pytest

from tuneforge.core.config import CompressConfig
from tuneforge.core.errors import CompressError, ModelLoadError

pytest.importorskip("llama_cpp", reason="the GGUF parity check runs llama.cpp (llama-cpp-python, dev extra)")
pytestmark = pytest.mark.slow  # fetches llama.cpp's sources on first use


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tuneforge.models import load

    tiny = load("tiny-random-llama")
    folder = tmp_path_factory.mktemp("tiny-hf")
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder


def test_f16_export_runs_in_llama_cpp_like_the_parent(tiny_folder, tmp_path):
    from tuneforge.compress.export import GGUF_FILE, GGUFSide, export_gguf, gguf_chat_template
    from tuneforge.core.artifacts import load_artifact
    from tuneforge.models import load
    from tuneforge.models.generate import SamplingParams, render_prompt
    from tuneforge.serve.engine.engine import Engine, EngineLimits
    from tuneforge.serve.engine.llamacpp import llamacpp_engine_parts

    cfg = CompressConfig.model_validate({"parity": {"max_prompts": 6, "max_new_tokens": 8}})
    artifact = export_gguf(str(tiny_folder), tmp_path / "gguf", cfg, "f16")
    manifest = load_artifact(artifact.path).manifest
    assert manifest["compression"]["format"] == "gguf" and manifest["compression"]["type"] == "f16"
    assert manifest["metrics"]["parity"]["passed"] and manifest["metrics"]["parity"]["agreement"] >= 0.95
    parent = load(str(tiny_folder))
    assert gguf_chat_template(artifact.path / GGUF_FILE) == parent.tokenizer.chat_template
    with pytest.raises(ModelLoadError, match="serve.backend=llamacpp"):
        load(str(artifact.path))
    # served by the llamacpp backend, the exported file answers as llama.cpp itself does
    loaded, runner = llamacpp_engine_parts(str(artifact.path), 512)
    engine = Engine(loaded, EngineLimits(max_num_seqs=1, max_model_len=512), runner=runner).start()
    try:
        ids = parent.tokenizer(render_prompt(parent.tokenizer, [{"role": "user", "content": "hello"}]),
                               add_special_tokens=False)["input_ids"]
        ours = list(engine.stream(ids, SamplingParams(max_new_tokens=8, ignore_eos=True)))[-1].token_ids
    finally:
        engine.shutdown()
    side = GGUFSide(artifact.path / GGUF_FILE, 512)
    try:
        assert ours == side.greedy(ids, 8)
    finally:
        side.close()
    assert json.loads((artifact.path / "parity.json").read_text())["prompts"] == 6


def test_bad_exports_are_refused_with_the_reason(tiny_folder, tmp_path, tiny_adapter):
    from tuneforge.compress.export import export_gguf

    with pytest.raises(CompressError, match="compress merge"):
        export_gguf(str(tiny_adapter.path), tmp_path / "a", CompressConfig(), "f16")
    with pytest.raises(CompressError, match="not one of f16, q8_0"):
        export_gguf(str(tiny_folder), tmp_path / "b", CompressConfig(), "q3_weird")
    alien = tmp_path / "alien"
    alien.mkdir()
    (alien / "config.json").write_text(json.dumps({"architectures": ["FrobnicatorForCausalLM"]}))
    with pytest.raises(CompressError, match="does not know FrobnicatorForCausalLM.*LlamaForCausalLM"):
        export_gguf(str(alien), tmp_path / "c", CompressConfig(), "f16")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()

