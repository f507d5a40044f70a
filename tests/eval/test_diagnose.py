"""`tuneforge run` says why tuning did not work: cause and knob from the artifacts' numbers."""

from __future__ import annotations

from tuneforge.eval.diagnose import diagnose


def manifest(loss: float, rows: int = 72, facts: int = 24, methods=()):
    return {"metrics": {"train_loss_last": loss},
            "config": {"train": {"lr": 2e-4, "epochs": 3, "forgetting": {"methods": list(methods)}}},
            "recipe": {"data": {"rows": rows, "facts": facts}}}


def test_under_training_too_few_phrasings_and_forgetting():
    low = {"domain_accuracy": 0.17, "base_domain_accuracy": 0.07}
    [under] = diagnose(low, manifest(1.8), None)
    assert "under-trained" in under.cause and "train.lr" in under.knob
    [few] = diagnose(low, manifest(0.05), {"steps": [{"step": "load"}]})
    assert "3.0 training rows per fact" in few.cause and "data.knowledge.enabled" in few.knob
    [far] = diagnose(low, manifest(0.05, rows=300), {"steps": [{"step": "knowledge"}]})
    assert "asked too differently" in far.cause and "data.knowledge" not in far.knob
    forgot = {"domain_accuracy": 0.9, "general_accuracy_drop": 0.06, "general_accuracy_ci": [-0.11, -0.01]}
    [drop] = diagnose(forgot, manifest(0.05), None)
    assert "6.0 points" in drop.problem and drop.cause.startswith("forgetting") and "[replay]" in drop.knob
    noisy = {**forgot, "general_accuracy_ci": [-0.11, 0.02]}
    assert "noise" in diagnose(noisy, manifest(0.05, methods=["replay"]), None)[0].cause


def test_nothing_to_say_when_it_worked():
    assert diagnose({"domain_accuracy": 0.85, "general_accuracy_drop": 0.0, "general_accuracy_ci": [-0.02, 0.02]},
                    manifest(0.05), None) == []
