"""The parity chain's eval step: parent and child answer the eval sets; an accuracy drop fails the step."""

import json

import pytest

from tuneforge.compress.merge import merge
from tuneforge.compress.prune import prune
from tuneforge.compress.quantize import quantize
from tuneforge.core.config import CompressConfig, EvalConfig, ParityConfig, PruneConfig
from tuneforge.core.errors import CompressError
from tuneforge.eval.evaluate import answer_questions
from tuneforge.models import load

LOOSE = dict(max_prompts=2, max_new_tokens=4, min_agreement=0.0, max_mean_logit_diff=100.0)


@pytest.fixture(scope="module")
def merged(tiny_adapter, tmp_path_factory):
    return merge(tiny_adapter.path, tmp_path_factory.mktemp("pe") / "merged",
                 CompressConfig(parity=ParityConfig(**LOOSE)))


@pytest.fixture(scope="module")
def own_answers(merged, tmp_path_factory):
    """A question set the parent answers perfectly: its keys are the parent's own greedy answers."""
    questions = ["What color is the lamp?", "Where do you ship?", "How long is the warranty?",
                 "Can I return an item?", "What is your phone number?", "Do you sell gift cards?"]
    eval_cfg = EvalConfig(general=False, max_new_tokens=6)
    answers = answer_questions(load(str(merged.path)), [{"question": q} for q in questions], eval_cfg, "keys")
    path = tmp_path_factory.mktemp("q") / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": q, "key": a}) + "\n"
                            for q, a in zip(questions, answers, strict=True) if a.strip()))
    return eval_cfg.model_copy(update={"questions": path})


def test_eval_step_reports_accuracy_of_parent_and_child(merged, own_answers, tmp_path):
    cfg = CompressConfig(parity=ParityConfig(**LOOSE, eval=True, max_accuracy_drop=1.0))
    artifact = quantize(merged.path, tmp_path / "int8", cfg, eval_cfg=own_answers)
    report = json.loads((artifact.path / "parity.json").read_text())
    assert report["eval"]["domain"]["parent"] == 1.0
    assert report["eval"]["domain"]["delta"] == pytest.approx(report["eval"]["domain"]["child"] - 1.0)


def test_eval_step_fails_a_child_that_loses_accuracy(merged, own_answers, tmp_path):
    cfg = CompressConfig(parity=ParityConfig(**LOOSE, eval=True, max_accuracy_drop=0.01),
                         prune=PruneConfig(method="magnitude", sparsity=0.9))
    with pytest.raises(CompressError,
                       match=r"domain accuracy 0.000 vs 1.000: a drop over compress.parity.max_accuracy_drop 0.01"):
        prune(merged.path, tmp_path / "pruned", cfg, eval_cfg=own_answers)
    assert not (tmp_path / "pruned").exists()
