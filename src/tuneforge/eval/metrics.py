"""Answer metrics, each a small pure function of (answer, row) or of a list of them.

Row fields each metric needs:

| metric | row field | per answer |
| --- | --- | --- |
| key accuracy | `key` (str or list: any may match) | answer contains a key after normalisation |
| exact match, token F1, ROUGE-L | `reference` | against the reference answer |
| BLEU, chrF | `reference` | corpus-level (sacrebleu) |
| task completion | `checks` | every rubric check passes: regex, json, json_schema, must_contain, must_not_contain |
| refusal rate | (none) | the answer refuses ("I can't help with that", "抱歉，我无法…") |

Normalisation for comparisons: Unicode NFKC (full-width → ASCII), case folding, whitespace
collapsed, thousands separators and trailing `.0` removed from numbers (`1,000.0` → `1000`).
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from typing import Any

_NUM = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\d])")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)


def _number(match: re.Match[str]) -> str:
    whole = match.group(1).replace(",", "")
    frac = (match.group(2) or "").rstrip("0")
    return f"{int(whole)}.{frac}" if frac else str(int(whole))


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed, numbers canonical: the form answers and keys are compared in."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _NUM.sub(_number, text)
    return re.sub(r"\s+", " ", text).strip()


def key_match(answer: str, keys: list[str]) -> bool:
    """True when the answer contains any of the keys (both normalised)."""
    norm = normalize(answer)
    return any(normalize(key) in norm for key in keys)


def tokens(text: str) -> list[str]:
    """Words for F1/ROUGE: normalised, punctuation dropped, each CJK character a token."""
    return _WORD.findall(normalize(text))


def exact_match(answer: str, reference: str) -> float:
    """1.0 when answer and reference are equal after normalisation and stripping punctuation."""
    strip = str.maketrans("", "", string.punctuation + "。，！？：；、")
    return float(normalize(answer).translate(strip).strip() == normalize(reference).translate(strip).strip())


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1."""
    pred, gold = tokens(answer), tokens(reference)
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure over `tokens` (rouge-score's LCS, with our CJK-aware tokenizer)."""
    from rouge_score import rouge_scorer

    class _Tok:
        def tokenize(self, text: str) -> list[str]:
            return tokens(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tok())
    return float(scorer.score(reference, answer)["rougeL"].fmeasure)


def corpus_bleu_chrf(answers: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (0–100, `zh` tokenizer when references are Chinese) and chrF (0–100), via sacrebleu."""
    import sacrebleu

    chinese = sum(bool(_CJK.search(r)) for r in references) > len(references) / 2
    bleu = sacrebleu.corpus_bleu(answers, [references], tokenize="zh" if chinese else "13a")
    chrf = sacrebleu.corpus_chrf(answers, [references])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


REFUSAL = re.compile(
    r"(?i)\b(?:i(?:'m| am) (?:sorry|unable|not able)|i can(?:no|')t (?:help|assist|provide|answer|do that)|"
    r"i (?:cannot|won't|will not) (?:help|assist|provide|answer)|as an ai(?: language model)?,? i|"
    r"i(?:'m| am) not (?:allowed|permitted))|"
    r"抱歉|对不起，我(?:无法|不能)|我无法(?:回答|提供|帮助)|我不能(?:回答|提供|帮助)"
)


def is_refusal(answer: str) -> bool:
    """The answer declines instead of answering."""
    return bool(REFUSAL.search(answer))


def _json_payload(answer: str) -> Any:
    text = answer.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    return json.loads(text)


CHECKS = ("regex", "json", "json_schema", "must_contain", "must_not_contain")


def run_checks(answer: str, checks: dict[str, Any]) -> dict[str, bool]:
    """Each rubric check's pass/fail. JSON may be bare or in a ```json fence."""
    results: dict[str, bool] = {}
    for name, spec in checks.items():
        if name == "regex":
            results[name] = re.search(spec, answer) is not None
        elif name in ("json", "json_schema"):
            try:
                payload = _json_payload(answer)
            except (json.JSONDecodeError, ValueError):
                results[name] = False
                continue
            if name == "json":
                results[name] = bool(spec) is True
            else:
                import jsonschema

                results[name] = jsonschema.Draft202012Validator(spec).is_valid(payload)
        elif name == "must_contain":
            results[name] = key_match(answer, [spec] if isinstance(spec, str) else list(spec))
        elif name == "must_not_contain":
            results[name] = not key_match(answer, [spec] if isinstance(spec, str) else list(spec))
    return results


def validate_checks(checks: Any, where: str) -> dict[str, Any]:
    """Reject unknown or malformed rubric checks, naming the row."""
    from tuneforge.core.errors import DataError

    if not isinstance(checks, dict) or not checks:
        raise DataError(f"{where}: 'checks' must be an object of {', '.join(CHECKS)}")
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise DataError(f"{where}: unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    if "regex" in checks:
        try:
            re.compile(checks["regex"])
        except (re.error, TypeError) as exc:
            raise DataError(f"{where}: checks.regex is not a valid regular expression ({exc})") from None
    if "json_schema" in checks:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(checks["json_schema"])
        except jsonschema.SchemaError as exc:
            raise DataError(f"{where}: checks.json_schema is not a valid JSON schema ({exc.message})") from None
    return checks
