"""Measurements for the translation example's README, each printed as one JSON object.

    python examples/translation/measure.py back-translation   # what the shipped model's back-translation yields
    python examples/translation/measure.py language           # the language guard on the held-out sentences
    python examples/translation/measure.py guard-answers      # the route's guards on the eval's answers

`back-translation` runs both of the data pipeline's kinds with the shipped SmolLM2-135M-Instruct, greedy:
- `data.augment.back_translation` (monolingual French → synthetic English): rows kept, rejected by reason, and
  chrF of the kept synthetic English against the English that make_data.py knows (never used for training);
- `data.augment.paraphrase` with `mode: back_translation` (the English sources round-tripped through French):
  rows kept, and chrF of the French pivot against the true French — the shipped model's own EN→FR.

`language` runs the gateway's language guard (serve.safety.language, langdetect) over the held-out French
references (must pass) and English sources (must be caught) at several `min_chars` and `min_confidence` — with
the monolingual
and the training pairs too, short glossary terms included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import make_data  # noqa: E402  (this folder's data tables)


def back_translation(model: str, limit: int) -> dict:
    from tuneforge.core.config import BackTranslationConfig
    from tuneforge.data.augment import (
        TRANSLATE_PROMPT,
        back_translation_rows,
        clean_rewrite,
        make_rewriter,
        paraphrase_rows,
    )
    from tuneforge.eval.metrics import corpus_bleu_chrf

    translate = make_rewriter(model, None, None, "OPENAI_API_KEY", 128, 0.0)
    cfg = BackTranslationConfig(files=[HERE / "monolingual.fr.txt"], model=model, prefix=f"{make_data.TAG} ",
                                require_language="en")
    mono = make_data.MONOLINGUAL[:limit]
    made, rejected = back_translation_rows([(str(i), fr) for i, (_, fr) in enumerate(mono)], translate, cfg)
    english = {fr: en for en, fr in make_data.MONOLINGUAL}
    synthetic = [row["messages"][0]["content"].removeprefix(cfg.prefix) for _, row in made]
    truth = [english[row["messages"][1]["content"]] for _, row in made]
    bt = {"lines": len(mono), "kept": len(made), "rejected": dict(rejected),
          "chrf_synthetic_english": corpus_bleu_chrf(synthetic, truth)["chrf"] if made else None,
          "examples": [{"french": row["messages"][1]["content"], "synthetic_english": s}
                       for (_, row), s in list(zip(made, synthetic, strict=True))[:5]]}

    pairs = make_data.parallel_pairs()[:limit]
    rows = [make_data.row(en, fr, tag=False) for en, fr in pairs]
    pivots = [clean_rewrite(p) for p in translate([TRANSLATE_PROMPT.format(language="French", text=en)
                                                   for en, _ in pairs])]
    kept = paraphrase_rows(rows, translate, "back_translation", "French", "English")
    round_trip = {"rows": len(rows), "kept": len(kept),
                  "chrf_pivot_french": corpus_bleu_chrf(pivots, [fr for _, fr in pairs])["chrf"],
                  "examples": [{"english": en, "pivot_french": p} for (en, _), p in zip(pairs[:5], pivots,
                                                                                       strict=False)]
                  + [{"english": s["messages"][0]["content"], "round_trip": v["messages"][0]["content"]}
                     for s, v in kept[:5]]}
    return {"model": model, "back_translation": bt, "paraphrase_round_trip": round_trip}


def language(min_chars: list[int], min_confidence: list[float]) -> dict:
    from tuneforge.core.safety_config import LanguageGuardConfig
    from tuneforge.serve.safety.language import check_language

    pairs = make_data.HELDOUT + make_data.MONOLINGUAL + make_data.parallel_pairs()
    french = [fr for _, fr in pairs]
    english = [en for en, _ in pairs]
    out = {}
    for n in min_chars:
        for confidence in min_confidence:
            cfg = LanguageGuardConfig(output=["fr"], min_chars=n, min_confidence=confidence)
            refused = [t for t in french if check_language(t, ["fr"], cfg)]
            out[f"min_chars={n} min_confidence={confidence}"] = {
                "french_refused": len(refused),
                "english_caught": sum(bool(check_language(t, ["fr"], cfg)) for t in english),
                "french_refused_examples": refused[:4]}
    return {"texts_per_language": len(french), "guard": out}


def guard_answers(report: Path) -> dict:
    """The example route's output guards (gateway.yaml) over each evaluated model's held-out answers."""
    from tuneforge.gateway.config import load_gateway
    from tuneforge.serve.safety.guard import OutputGuard

    safety = load_gateway(HERE / "gateway.yaml").routes["lumeo-fr"].safety
    assert safety is not None
    out = {}
    for result in json.loads((report / "report.json").read_text(encoding="utf-8")):
        answers = result["sets"]["domain"]["answers"]
        refused = []
        for answer in answers:
            guard = OutputGuard(safety)
            guard.check(answer)
            if guard.verdict.blocked:
                refused.append({"answer": answer, "why": guard.verdict.reasons})
        out[result["model"]] = {"answers": len(answers), "refused": len(refused), "examples": refused[:3]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["back-translation", "language", "guard-answers"])
    parser.add_argument("--report", type=Path, default=Path("runs/translation/eval"),
                        help="guard-answers: an eval-report artifact of this example")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=40, help="back-translation: lines/rows translated")
    parser.add_argument("--min-chars", type=int, nargs="+", default=[8, 12, 24])
    parser.add_argument("--min-confidence", type=float, nargs="+", default=[0.0, 0.9])
    args = parser.parse_args()
    if args.what == "back-translation":
        result = back_translation(args.model, args.limit)
    elif args.what == "language":
        result = language(args.min_chars, args.min_confidence)
    else:
        result = guard_answers(args.report)
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
