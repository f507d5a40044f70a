"""lm-evaluation-harness on a tuneforge model, fully offline.

tuneforge ships one local multiple-choice task, `tuneforge_general_mc` (24 questions, English and
Chinese); any other task folder can be added with `eval.lm_eval_include`. Task data must be local
(a `json` dataset with `data_files`, as in the shipped task): no hub is contacted.
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.core.errors import ConfigError

SHIPPED_TASK = "tuneforge_general_mc"
_TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def shipped_task_dir(workdir: Path) -> Path:
    """A folder holding the shipped task's YAML, pointing at the packaged data file by absolute path."""
    data = Path(str(resources.files("tuneforge.eval") / "tasks" / "general_mc.jsonl"))
    folder = workdir / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{SHIPPED_TASK}.yaml").write_text(_TASK_YAML.format(name=SHIPPED_TASK, data=data))
    return folder


def run_harness(loaded, tasks: list[str], include: list[Path], limit: int | None = None,
                batch_size: int = 8) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from lm_eval's `simple_evaluate` on an already loaded model."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise ConfigError("eval.lm_eval_tasks needs lm-eval: pip install 'tuneforge[eval]' (or lm-eval)") from exc

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(shipped_task_dir(Path(tmp))), *map(str, include)]
        manager = TaskManager(include_path=paths)
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            local = sorted(t for t in manager.all_tasks if t.startswith("tuneforge_"))
            raise ConfigError(f"eval.lm_eval_tasks: unknown task(s) {unknown}; shipped: {', '.join(local)}")
        device = str(next(loaded.model.parameters()).device)
        model = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, device=device)
        out = simple_evaluate(model=model, tasks=tasks, task_manager=manager, limit=limit, log_samples=False)
    results: dict[str, dict[str, Any]] = {}
    for task, values in (out or {}).get("results", {}).items():
        results[task] = {key.split(",")[0]: float(v) for key, v in values.items()
                         if isinstance(v, int | float) and "stderr" not in key}
    return results
