"""Say when tuning did not work: the likely cause of a low domain accuracy or a general-accuracy drop,
and the knob to turn, from what the run's artifacts recorded (eval metrics, the training loss, the
recipe's data shape, the knowledge-augmentation and PII steps). Plain data in, sentences out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.core.config import DiagnoseConfig


@dataclass(frozen=True)
class Finding:
    """One problem: what was measured, the likely cause, the knob."""

    problem: str
    cause: str
    knob: str
    about: str = "accuracy"  # "accuracy" (a gate missed) or "data" (a problem in the training rows)

    def __str__(self) -> str:
        return f"{self.problem} — likely cause: {self.cause}. Knob: {self.knob}"


def diagnose(metrics: dict[str, Any], train: dict[str, Any] | None, dataset: dict[str, Any] | None,
             cfg: DiagnoseConfig | None = None) -> list[Finding]:
    """Findings for an eval report's `metrics`, given the adapter's manifest (`train`: its metrics, config
    and recipe) and the dataset's metrics; an empty list when nothing looks wrong."""
    cfg = cfg or DiagnoseConfig()
    findings: list[Finding] = []
    train = train or {}
    record = train.get("recipe") or {}
    shape = record.get("data") or {}
    config = (train.get("config") or {}).get("train") or {}
    loss = (train.get("metrics") or {}).get("train_loss_last")
    domain = metrics.get("domain_accuracy")
    if domain is not None and domain < cfg.min_domain_accuracy:
        findings.append(_low_domain(domain, metrics.get("base_domain_accuracy"), loss, shape, config, dataset, cfg))
    drop = metrics.get("general_accuracy_drop")
    ci = metrics.get("general_accuracy_ci")
    if drop is not None and drop > cfg.max_general_drop:
        significant = ci is not None and ci[1] < 0
        methods = (config.get("forgetting") or {}).get("methods") or []
        if not methods:
            knob = "turn on train.forgetting.methods: [replay] (or [kl]); or lower train.lr / train.epochs"
        else:
            knob = (f"train.forgetting.methods is {methods}: raise train.forgetting.replay_ratio or kl_weight, "
                    "or lower train.lr / train.epochs")
        findings.append(Finding(
            f"general accuracy fell {100 * drop:.1f} points"
            + (f" (95 % CI of the change [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}])" if ci else ""),
            "forgetting: the update moved the model away from what it knew" if significant
            else "possibly noise (the CI includes no change), possibly forgetting", knob))
    placeholders = _placeholder_answers(dataset)
    if placeholders is not None:
        findings.append(placeholders)
    return findings


def _placeholder_answers(dataset: dict[str, Any] | None) -> Finding | None:
    """The answers whose PII the cleaning replaced: the model learns the placeholder, not the value."""
    pii: dict[str, Any] = next((s for s in (dataset or {}).get("steps", []) if s.get("step") == "pii"), {})
    count = int(pii.get("answers_with_placeholders") or 0)
    if not count:
        return None
    kinds = pii.get("answer_placeholder_types") or {}
    named = ", ".join(f"<{kind}>" for kind in kinds) or "a placeholder"
    return Finding(
        f"{count} training answer(s) hold {named} after PII cleaning",
        f"the PII filter replaced the value in those answers, so the model learns to answer {named} "
        "instead of the fact",
        "if the value is public (a hotline, a support address), list it in data.pii.allow; "
        "to keep a whole type, remove it from data.pii.types", about="data")


def _low_domain(domain: float, base: float | None, loss: float | None, shape: dict[str, Any],
                config: dict[str, Any], dataset: dict[str, Any] | None, cfg: DiagnoseConfig) -> Finding:
    where = f"domain accuracy {domain:.2f}" + (f" (base {base:.2f})" if base is not None else "") + \
        f", below {cfg.min_domain_accuracy:.2f}"
    lr, epochs = config.get("lr"), config.get("epochs")
    if loss is not None and loss > cfg.learned_loss:
        return Finding(where, f"under-trained: the final training loss is {loss:.2f} per target token, so even the "
                       f"training phrasings are not learned (lr {lr}, {epochs} epochs)",
                       "raise train.lr or train.epochs (or train.auto.exposures under recipe auto)")
    per_fact = shape["rows"] / max(1, shape["facts"]) if shape.get("rows") else None
    steps = {s.get("step"): s for s in (dataset or {}).get("steps", [])}
    knowledge_off = "knowledge" not in steps
    if per_fact is not None and per_fact < cfg.min_rows_per_fact:
        return Finding(where, f"too few phrasings per fact: {per_fact:.1f} training rows per fact — the model "
                       "learned those wordings, not the facts",
                       "write more questions per fact in different words"
                       + ("; turn data.knowledge.enabled on" if knowledge_off else ""))
    return Finding(where, "the training phrasings are learned (loss "
                   + (f"{loss:.2f}" if loss is not None else "low")
                   + ") but the test questions are asked too differently",
                   "add training questions in the words users use (synonyms, other word order); "
                   + ("turn data.knowledge.enabled on; " if knowledge_off else "")
                   + "raise train.auto.exposures")


def print_diagnosis(report, model_ref: str, dataset, cfg: DiagnoseConfig) -> list[Finding]:
    """Diagnose a `tuneforge run` from its artifacts (eval report, the model at `model_ref`, the dataset) and
    print the findings, or one line saying that the gates of `cfg` were met."""
    from tuneforge.core.artifacts import is_artifact, load_artifact
    from tuneforge.core.progress import console

    train = load_artifact(model_ref).manifest if is_artifact(model_ref) else None
    findings = diagnose(report.metrics, train, dataset.metrics if dataset is not None else None, cfg)
    for finding in findings:
        console.print(f"[yellow]diagnosis:[/yellow] {finding}", highlight=False)
    if not any(f.about == "accuracy" for f in findings) and "domain_accuracy" in report.metrics:
        console.print(f"diagnosis: domain accuracy ≥ {cfg.min_domain_accuracy:.2f} and general accuracy held "
                      f"(drop ≤ {100 * cfg.max_general_drop:.0f} point)", highlight=False)
    return findings
