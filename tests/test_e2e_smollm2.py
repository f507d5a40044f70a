"""End to end on the real SmolLM2-135M-Instruct: prepare → a few LoRA steps → eval → serve → SDK."""

from pathlib import Path

import pytest

from tuneforge.core.config import load_pipeline

DEMO = Path(__file__).parents[1] / "examples" / "customer-service"


@pytest.mark.slow
def test_smollm2_train_eval_serve(tmp_path):
    from openai import OpenAI

    from tuneforge.data.prepare import prepare
    from tuneforge.eval.evaluate import run_eval
    from tuneforge.pipeline import start_server, stop_server
    from tuneforge.train.loop import train

    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join((DEMO / "heldout.jsonl").read_text().splitlines()[:4]) + "\n")
    cfg = load_pipeline(DEMO / "pipeline.yaml", [
        "train.max_steps=4", "train.batch_size=4", "eval.max_new_tokens=24",
        f"eval.questions={questions}", "data.validation_fraction=0.02", "eval.general=false",
    ])
    dataset = prepare(cfg.data, cfg.model, tmp_path / "dataset")
    adapter = train(dataset, cfg.model, cfg.train, tmp_path / "adapter")
    assert adapter.metrics["steps"] == 4
    report = run_eval(str(adapter.path), cfg.eval, tmp_path / "eval", dataset)
    # a few steps at lr 2e-3 already move the validation loss on this data
    assert report.metrics["val_loss"] < report.metrics["base_val_loss"]

    process, url = start_server(str(adapter.path), cfg.serve)
    try:
        client = OpenAI(base_url=url, api_key="x")
        reply = client.chat.completions.create(
            model="quillon-support", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0,
        )
        assert "Paris" in reply.choices[0].message.content
        stream = client.chat.completions.create(
            model="quillon-support", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0, stream=True,
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert streamed == reply.choices[0].message.content
    finally:
        stop_server(process)
