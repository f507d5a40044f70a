"""Knowledge distillation in the training loop: cross-entropy on the data plus KL to a teacher's softened logits.

loss = (1 − α) · CE(student, labels) + α · T² · KL(softmax(teacher / T) ‖ softmax(student / T)),
summed over target tokens (the loop divides by the step's target count, as for plain CE). T² keeps
the KL gradients on the scale of the CE ones (Hinton et al., 2015). The teacher runs without
gradients on the same batch; both sides must share the tokenizer.
"""

from __future__ import annotations

from typing import Any

from tuneforge.core.config import DistillConfig
from tuneforge.core.errors import ConfigError
from tuneforge.models import load
from tuneforge.train.batching import IGNORE_INDEX, aligned_targets, forward_logits


def distill_loss(student, teacher, targets, temperature: float, alpha: float):
    """(objective, cross-entropy), both summed over the positions where `targets` is not ignored."""
    import torch.nn.functional as F

    keep = targets != IGNORE_INDEX
    s, t = student[keep].float(), teacher[keep].float()
    ce = F.cross_entropy(s, targets[keep], reduction="sum")
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="sum")
    return (1 - alpha) * ce + alpha * temperature**2 * kl, ce


class Distiller:
    """The teacher, frozen on the training device, and the combined loss of a batch."""

    def __init__(self, cfg: DistillConfig, student_tokenizer: Any, device: Any) -> None:
        teacher = load(cfg.teacher)
        if teacher.tokenizer.get_vocab() != student_tokenizer.get_vocab():
            raise ConfigError(f"train.distill.teacher: {cfg.teacher} has another tokenizer than the student; "
                              "distillation compares logits token by token, so both must share one")
        self.cfg = cfg
        self.teacher = teacher.model.to(device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, model: Any, batch: dict[str, Any]):
        import torch

        student = forward_logits(model, batch)
        with torch.no_grad():
            teacher = forward_logits(self.teacher, batch)
        if teacher.shape[-1] != student.shape[-1]:
            raise ConfigError(f"train.distill.teacher: vocabulary of {teacher.shape[-1]} logits, the student "
                              f"has {student.shape[-1]}")
        return distill_loss(student, teacher, aligned_targets(batch), self.cfg.temperature, self.cfg.alpha)
