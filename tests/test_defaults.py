"""Every default lives in one place, the config models (core/config.py); these tests fail when one is copied.

A copy drifts (gpt-fast's `main(max_new_tokens=100)` vs its argparse 200; here `Scheduler(256)` vs
`ServeConfig` 512, a 2048 fallback where `DataConfig` said 512). A function that mirrors a config field
takes None (then `core.config.default` / `settings`) or the config object itself.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import tuneforge
from tuneforge.core import config as config_module

SRC = Path(tuneforge.__file__).parent
STAGES = ("data", "train", "compress", "eval")

# Parameters that share a config field's name and value without mirroring it, and why.
NOT_MIRRORS = {
    ("tuneforge.train.attention.segment_attention", "dropout"): "transformers' attention-interface signature",
    ("tuneforge.train.forgetting.self_rehearsal_rows", "batch_size"): "its generation batch; no config field",
    ("tuneforge.eval.harness.run_harness", "batch_size"): "lm-eval's batch; TrainConfig's is the training batch",
}


def config_defaults() -> dict[str, list[tuple[str, Any]]]:
    """Field name → [(config model, default)] over every config model."""
    fields: dict[str, list[tuple[str, Any]]] = {}
    for obj in vars(config_module).values():
        if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == config_module.__name__:
            for name, info in obj.model_fields.items():
                fields.setdefault(name, []).append((obj.__name__, info.get_default(call_default_factory=True)))
    return fields


def public_callables() -> list[tuple[str, Any]]:
    """(qualified name, function) of every public function, method and __init__ of the stage packages."""
    found = []
    for stage in STAGES:
        package = importlib.import_module(f"tuneforge.{stage}")
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                    continue
                if inspect.isfunction(obj):
                    found.append((f"{module.__name__}.{name}", obj))
                elif inspect.isclass(obj):
                    found += [(f"{module.__name__}.{name}.{attr}", fn) for attr, fn in vars(obj).items()
                              if inspect.isfunction(fn) and (not attr.startswith("_") or attr == "__init__")]
    return found


def unset(value: Any) -> bool:
    return value is None or (isinstance(value, tuple | list | dict | set) and not value)


def test_the_scan_sees_the_stage_functions():
    names = {name for name, _ in public_callables()}
    assert {"tuneforge.data.clean.dedup_rows", "tuneforge.train.loop.train", "tuneforge.compress.quantize.quantize",
            "tuneforge.eval.evaluate.run_eval"} <= names
    assert len(names) > 100, len(names)


def test_no_function_repeats_a_config_default():
    fields = config_defaults()
    copies = []
    for qualified, fn in public_callables():
        for param in inspect.signature(fn).parameters.values():
            if param.default is inspect.Parameter.empty or unset(param.default) or param.name not in fields:
                continue
            if (qualified, param.name) in NOT_MIRRORS:
                continue
            same = [model for model, value in fields[param.name]
                    if type(value) is type(param.default) and value == param.default]
            if same:
                copies.append(f"{qualified}({param.name}={param.default!r}) repeats {'/'.join(same)}.{param.name}")
    assert not copies, "defaults written twice (default to None and read the config instead):\n" + "\n".join(copies)


def test_the_check_catches_a_copy(monkeypatch):
    def dedup_like(rows, threshold: float = 0.85):  # DedupConfig.threshold's default, copied
        return rows

    dedup_like.__module__ = "tuneforge.data.clean"
    monkeypatch.setattr("tuneforge.data.clean.dedup_like", dedup_like, raising=False)
    with pytest.raises(AssertionError, match=r"dedup_like\(threshold=0.85\) repeats DedupConfig.threshold"):
        test_no_function_repeats_a_config_default()


def string_constants(path: Path) -> list[ast.Constant]:
    """The string constants of a source file, its docstrings aside."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_cli_help_reads_defaults_from_the_config():
    hard_coded = [node.value for node in string_constants(SRC / "cli.py")
                  if re.search(r"\[default: |default:? \d", node.value)]
    assert not hard_coded, hard_coded


def code_strings(value: str) -> list[str]:
    """`path:line` of each string constant in src equal to `value` (docstrings aside)."""
    return [f"{path.relative_to(SRC)}:{node.lineno}" for path in sorted(SRC.rglob("*.py"))
            for node in string_constants(path) if node.value == value]


def test_the_default_model_is_named_once():
    assert code_strings(config_module.DEFAULT_MODEL) == ["core/config.py:" + str(
        next(i for i, line in enumerate((SRC / "core/config.py").read_text().splitlines(), 1)
             if line.startswith("DEFAULT_MODEL =")))]


def test_literal_choices_are_written_once():
    from typing import get_args

    assert config_module.TRAIN_METHODS == get_args(config_module.TrainMethod)
    assert config_module.ALL_PII == get_args(config_module.PiiType)
    assert config_module.STAGES == get_args(config_module.Stage)
    from tuneforge.models.formats import FORMATS
    from tuneforge.train.methods import METHODS

    assert set(METHODS) == set(config_module.TRAIN_METHODS)  # one module per train.method value
    assert set(FORMATS) == set(get_args(config_module.QuantizeMethod))  # one module per format
