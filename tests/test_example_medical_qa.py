"""examples/medical-qa: its configs validate, its data is what make_data.py writes (held-out and guard test
phrasings never in training), and the review loop closes: answers held by the gateway's queue, approved or
edited with `tuneforge review`, exported, are read by `tuneforge data prepare` as extra training rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from typer.testing import CliRunner

from tuneforge.core.config import ModelConfig, load_pipeline
from tuneforge.gateway.config import load_gateway

EXAMPLE = Path(__file__).parents[1] / "examples" / "medical-qa"


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / name).read_text(encoding="utf-8").splitlines()]


def _user_turns(rows: list[dict]) -> set[str]:
    out = set()
    for row in rows:
        out |= {row["instruction"]} if "instruction" in row else {
            m["content"] for m in row["messages"] if m["role"] == "user"}
    return out


def test_the_configs_validate():
    cfg = load_pipeline(EXAMPLE / "pipeline.yaml")
    assert [Path(f).name for f in cfg.data.files] == ["train.jsonl"] and all(Path(f).is_file() for f in cfg.data.files)
    assert cfg.eval.general is True and cfg.model.name == "smollm2-135m"
    route = load_gateway(EXAMPLE / "gateway.yaml").routes["linden-vale"]
    assert (route.sampling.max_temperature, route.sampling.default_temperature) == (0.3, 0.1)
    assert route.safety is not None and route.safety.review_rule() == (False, True, 0.1)
    [rule] = route.safety.topics.grounded
    assert Path(rule.known_file) == EXAMPLE / "dosing_known.txt" and rule.action == "answer"
    assert "pharmacist" in rule.answer


def test_the_data_is_what_make_data_writes_and_held_out_phrasings_stay_out_of_training():
    spec = importlib.util.spec_from_file_location("make_medical_data", EXAMPLE / "make_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, heldout = module._rows()
    assert train == _jsonl("train.jsonl") and heldout == _jsonl("heldout.jsonl")
    assert len(train) >= 200
    seen = _user_turns(train)
    known = set((EXAMPLE / "dosing_known.txt").read_text().splitlines())
    assert known <= seen  # the rule's known set is exactly what the training rows answer
    assert not {r["question"] for r in heldout} & seen
    guard = _jsonl("guard_test.jsonl")
    assert {r["kind"] for r in guard} == {"in_data_dosing", "out_of_data_dosing", "ordinary"}
    assert not {r["question"] for r in guard} & (seen | known)
    out_of_data_eval = [r for r in heldout if r["key"] == module.REFUSAL_KEY]
    named = " ".join(seen).lower()
    assert len(out_of_data_eval) >= 5
    for medicine in ("metformin", "warfarin", "insulin", "melatonin", "naproxen", "tramadol"):
        assert medicine not in named  # the eval's out-of-data medicines appear in no training row


def test_reviewed_answers_export_into_rows_that_prepare_reads(tmp_path):
    from tuneforge.data.prepare import prepare, read_split
    from tuneforge.serve.safety.cli import app
    from tuneforge.serve.safety.review import ReviewQueue

    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    queue = ReviewQueue(db)  # as the gateway holds them: the request as the model saw it, the answer
    question = "Can I give Linden Vitamin D Drops to my 2-year-old?"
    edited = queue.hold([{"role": "user", "content": question}], "Give 5 drops.", {"flagged": True},
                        route="linden-vale")
    approved = queue.hold([{"role": "user", "content": "Can my toddler see the paediatric nurse?"}],
                          "Yes, book the Wednesday afternoon children's clinic.", {}, route="linden-vale")
    rejected = queue.hold([{"role": "user", "content": "Is the clinic open?"}], "No idea.", {}, route="linden-vale")
    correction = ("Linden Vitamin D Drops are for babies up to 12 months. For an older child, please ask your "
                  "pharmacist or doctor.")
    runner = CliRunner()
    for args in (["edit", edited, "--who", "dr-marrow", "--answer", correction, "--reason", "not in the leaflet"],
                 ["approve", approved, "--who", "dr-marrow"], ["reject", rejected, "--who", "dr-marrow"]):
        result = runner.invoke(app, [*args, "--db", db])
        assert result.exit_code == 0, result.output
    out = tmp_path / "reviewed.jsonl"
    result = runner.invoke(app, ["export", str(out), "--db", db, "--route", "linden-vale"])
    assert result.exit_code == 0 and "wrote 2 rows" in result.output
    assert [r["messages"][-1]["content"] for r in map(json.loads, out.read_text().splitlines())] == [
        correction, "Yes, book the Wednesday afternoon children's clinic."]

    cfg = load_pipeline(EXAMPLE / "pipeline.yaml")
    data = cfg.data.model_copy(update={"files": [*cfg.data.files, out], "validation_fraction": 0.0})
    dataset = prepare(data, ModelConfig(name="tiny-random-llama"), tmp_path / "dataset")
    assert dataset.metrics["rows_in"] == len(_jsonl("train.jsonl")) + 2
    rows = read_split(dataset, "train")
    reviewed = [r for r in rows if r["source"] in (f"{out}:1", f"{out}:2")]  # not data.knowledge's variants
    assert sorted(r["messages"][-1]["content"] for r in reviewed) == sorted(
        [correction, "Yes, book the Wednesday afternoon children's clinic."])
    assert any(r["messages"][0]["content"] == question for r in reviewed)
