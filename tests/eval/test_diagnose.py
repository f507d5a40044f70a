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


def test_answers_with_pii_placeholders_name_the_count_and_data_pii_allow():
    dataset = {"steps": [{"step": "pii", "found": {"PHONE": 3}, "answers_with_placeholders": 2,
                          "answer_placeholder_types": {"PHONE": 2}}]}
    worked = {"domain_accuracy": 0.85, "general_accuracy_drop": 0.0, "general_accuracy_ci": [-0.02, 0.02]}
    [pii] = diagnose(worked, manifest(0.05), dataset)
    assert pii.problem.startswith("2 training answer(s) hold <PHONE>") and "data.pii.allow" in pii.knob
    assert pii.about == "data"
    low = {"domain_accuracy": 0.4, "base_domain_accuracy": 0.0}
    assert [f.about for f in diagnose(low, manifest(0.05, rows=300), dataset)] == ["accuracy", "data"]
    clean = {"steps": [{"step": "pii", "found": {"PHONE": 1}, "answers_with_placeholders": 0}]}
    assert diagnose(worked, manifest(0.05), clean) == []


def test_print_diagnosis_says_the_gates_were_met_beside_a_data_finding(tmp_path):
    from types import SimpleNamespace

    from tuneforge.core.config import DiagnoseConfig
    from tuneforge.core.progress import console
    from tuneforge.eval.diagnose import print_diagnosis

    report = SimpleNamespace(metrics={"domain_accuracy": 0.9, "general_accuracy_drop": 0.0})
    dataset = SimpleNamespace(metrics={"steps": [{"step": "pii", "answers_with_placeholders": 1,
                                                  "answer_placeholder_types": {"EMAIL": 1}}]})
    with console.capture() as captured:
        findings = print_diagnosis(report, str(tmp_path / "not-an-artifact"), dataset, DiagnoseConfig())
    text = captured.get()
    assert [f.about for f in findings] == ["data"]
    assert "1 training answer(s) hold <EMAIL>" in text and "data.pii.allow" in text
    assert "domain accuracy ≥ 0.80 and general accuracy held" in text
