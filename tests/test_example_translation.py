"""examples/translation: its configs validate, its data is what make_data.py writes, its held-out set is clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tuneforge.core.config import load_pipeline
from tuneforge.data.contamination import check_contamination
from tuneforge.data.formats import read_jsonl
from tuneforge.eval.evaluate import load_questions
from tuneforge.gateway.config import load_gateway

EXAMPLE = Path(__file__).parents[1] / "examples" / "translation"


def test_the_pipeline_and_gateway_configs_validate():
    cfg = load_pipeline(EXAMPLE / "pipeline.yaml")
    bt = cfg.data.augment.back_translation
    assert cfg.data.augment.enabled and bt is not None
    assert all(path.is_file() for path in [*cfg.data.files, *bt.files, cfg.eval.questions])
    assert not cfg.data.knowledge.enabled  # its question rewrites would break source/target pairs
    assert all("reference" in row for row in load_questions(cfg.eval.questions))  # scored with chrF
    reverse = load_pipeline(EXAMPLE / "reverse.yaml")  # the FR→EN model that back-translates
    assert bt.model == f"{reverse.output_dir}/{reverse.name}/adapter" and bt.prompt == "<2en> {text}"
    assert all(row["question"].startswith("<2en> ") for row in load_questions(reverse.eval.questions))
    gateway = load_gateway(EXAMPLE / "gateway.yaml")
    language = gateway.routes["lumeo-fr"].safety.language
    assert (language.input, language.output, language.action) == (["en"], ["fr"], "block")


def test_make_data_writes_the_committed_files(tmp_path):
    script = tmp_path / "make_data.py"
    script.write_text((EXAMPLE / "make_data.py").read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    for name in ("train.jsonl", "heldout.jsonl", "monolingual.fr.txt", "reverse/train.jsonl",
                 "reverse/heldout.jsonl"):
        assert (tmp_path / name).read_text(encoding="utf-8") == (EXAMPLE / name).read_text(encoding="utf-8"), name


def test_held_out_sentences_are_not_in_training(tmp_path):
    train = [row for _, row in read_jsonl(EXAMPLE / "train.jsonl")]
    mono = (EXAMPLE / "monolingual.fr.txt").read_text(encoding="utf-8").splitlines()
    train += [{"messages": [{"role": "assistant", "content": line}]} for line in mono]
    [result] = check_contamination(train, [EXAMPLE / "heldout.jsonl"], n=4, threshold=0.5)
    assert result.total == 36 and result.flagged == []
    # the French side too: each reference checked as if it were the question
    references = tmp_path / "references.jsonl"
    references.write_text("".join(json.dumps({"question": json.loads(line)["reference"]}) + "\n"
                                  for line in (EXAMPLE / "heldout.jsonl").open(encoding="utf-8")))
    [result] = check_contamination(train, [references], n=4, threshold=0.5)
    assert result.total == 36 and result.flagged == []
