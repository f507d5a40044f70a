"""Drift: is live traffic still what the model was tuned on? Two-sample tests, one p-value per signal.

The reference is the training dataset artifact (its `train` split: user turns are prompts, assistant turns
answers), or a traffic file from a window known to be good. The live sample is the traffic log
(`monitor.traffic`). Both are PII-scrubbed on reading and sampled (seeded) to bounded sizes.

Signals and their tests (each gives a p-value under "same distribution"):

- prompt_embedding: all-MiniLM-L6-v2 sentence embeddings (`core.encoder`); unbiased MMD² with a Gaussian
  kernel (bandwidth: the median pairwise squared distance of the pooled sample), permutation test
  (Gretton et al. 2012; alibi-detect's MMDDrift does the same).
- prompt_length: characters per prompt; two-sample Kolmogorov-Smirnov (scipy).
- prompt_language: langdetect (seeded) per prompt; chi-square statistic, permutation test (exact with the
  rare languages that make the asymptotic chi-square too eager).
- prompt_unseen_words: per prompt, the share of its words never seen in the reference. The vocabulary is
  built from one half of the reference and the other half is the comparison, so the reference is not
  measured against itself; one-sided permutation test on the mean (traffic repeating training questions
  word for word is no alarm; new vocabulary is).
- answer_length, refusal_rate, guard_flag_rate: when both sides have answers / guard flags; KS and
  Fisher's exact test.

Several tests on one run: a run on traffic from the training distribution would report some drift far
more often than `alpha` if each test were read at `alpha`. Holm's step-down correction over the signals
tested keeps the chance of any false alarm at most `alpha` (whatever their dependence); `drift_detected`
per signal is Holm's decision, and `any` is set when one signal is.

alibi-detect (MMDDrift) and Evidently were evaluated first: alibi-detect 0.13 pins numpy < 2 and
transformers < 4.58 (pip would downgrade both in our venv); Evidently 0.7 brings ~20 packages (litestar,
plotly, statsmodels, a telemetry client) and its embedding-drift methods answer with a score and a
threshold, not a p-value. The tests here are short numpy/scipy code.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.core.artifacts import is_artifact, load_artifact
from tuneforge.core.config import default
from tuneforge.core.errors import DataError
from tuneforge.core.language import detect_language
from tuneforge.core.monitor_config import DriftConfig
from tuneforge.core.pii import RowScrubber
from tuneforge.monitor.traffic import Exchange, answer_text, exchange, prompt_text, records

# The gauges the alert rules (deploy/) read.
P_VALUE_METRIC = "tuneforge:drift_p_value"
DETECTED_METRIC = "tuneforge:drift_detected"
LAST_RUN_METRIC = "tuneforge:drift_last_run_timestamp_seconds"

# Refusals as instruction-tuned models phrase them; searched for in an answer's first 300 characters.
REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) sorry,? (?:but )?I|I (?:can(?:no|')t|am unable to|'m unable to|won't be able to|must decline)"
    r"|I(?:'m| am) not able to|as an AI\b|I (?:can(?:no|')t|won't) (?:help|assist) with)", re.IGNORECASE)
# Words for the unseen-word rate: CJK characters one by one (they have no spaces), other letter runs whole,
# digit runs as one token (a new order number is not a new word).
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W\d_]+|\d+")


def words(text: str) -> list[str]:
    """The text's words, lower-cased, digit runs as `0`."""
    return ["0" if w.isdigit() else w for w in _WORD.findall(text.lower())]


def is_refusal(answer: str) -> bool:
    return REFUSAL.search(answer[:300]) is not None


def prompt_language(text: str) -> str:
    """ISO 639-1 code (core.language), `und` when too short or unknown."""
    return detect_language(text) or "und"


# ---------------------------------------------------------------- reading


def read_reference(path: str | Path, split: str = "train") -> list[Exchange]:
    """The reference sample: a dataset artifact's split, a raw training JSONL (`messages` rows, answers from
    the assistant turns, or `instruction`/`input`/`output` rows) or a traffic file."""
    path = Path(path)
    if is_artifact(path):
        artifact = load_artifact(path, kind="dataset", verify=False)
        files = artifact.manifest["files"]
        name = next((n for n in (f"{split}.parquet", f"{split}.jsonl") if n in files), None)
        if name is None:
            raise DataError(f"{path}: the dataset artifact has no {split!r} split")
        rows = _split_rows(artifact.file(name))
        out = [Exchange(prompt_text(r["messages"]), answer_text(r["messages"])) for r in rows if r.get("messages")]
        out = [e for e in out if e.prompt.strip()]
        if not out:
            raise DataError(f"{path}/{name}: no rows with a user turn")
        return out
    if path.is_dir():
        raise DataError(f"{path}: not a dataset artifact (no manifest.json) nor a JSONL file")
    out = []
    for where, record in records(path):
        if isinstance(record, dict) and isinstance(record.get("instruction"), str):  # alpaca rows
            prompt = "\n".join(str(record[k]) for k in ("instruction", "input") if record.get(k))
            record = {"prompt": prompt, "answer": record.get("output")}
        parsed = exchange(record, where)
        if parsed.answer is None and isinstance(record.get("messages"), list):  # a chat row's answers
            parsed.answer = answer_text(record["messages"])
        out.append(parsed)
    return out


def _split_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["messages"]).to_pylist()


def sample(exchanges: list[Exchange], limit: int, rng: np.random.Generator) -> list[Exchange]:
    """At most `limit` of them, drawn without replacement (kept in order)."""
    if len(exchanges) <= limit:
        return exchanges
    keep = np.sort(rng.choice(len(exchanges), size=limit, replace=False))
    return [exchanges[i] for i in keep]


def scrub(exchanges: list[Exchange]) -> list[Exchange]:
    """PII replaced by typed placeholders (core.pii), consistently within an exchange."""
    out = []
    for e in exchanges:
        scrubber = RowScrubber()
        out.append(Exchange(scrubber(e.prompt), None if e.answer is None else scrubber(e.answer), e.guard_flags))
    return out


# ---------------------------------------------------------------- features


@dataclass
class Features:
    """What the tests read, one row per exchange."""

    embeddings: np.ndarray             # (n, 384) unit vectors
    prompt_chars: np.ndarray           # (n,)
    languages: np.ndarray              # (n,) ISO codes, "und" when not told
    words: list[list[str]]
    answer_chars: np.ndarray | None    # (n,) or None when no answers were logged
    refusals: np.ndarray | None        # (n,) bool
    flagged: np.ndarray | None         # (n,) bool: some guard fired; None when flags were not logged

    def __len__(self) -> int:
        return len(self.prompt_chars)

    def take(self, index: np.ndarray) -> Features:
        """The rows at `index` (for resampling without embedding again)."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Features(self.embeddings[index], self.prompt_chars[index], self.languages[index],
                        [self.words[i] for i in index], pick(self.answer_chars), pick(self.refusals),
                        pick(self.flagged))


Embed = Callable[[list[str]], np.ndarray]


def featurize(exchanges: Sequence[Exchange], embed: Embed, batch_size: int | None = None,
              progress: Callable[[int], None] | None = None) -> Features:
    """Embed the prompts (in batches of `drift.batch_size`, `progress(n_done)` after each) and measure the
    simple statistics."""
    batch_size = batch_size or default(DriftConfig, "batch_size")
    prompts = [e.prompt for e in exchanges]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        chunks.append(embed(prompts[start:start + batch_size]))
        if progress is not None:
            progress(min(start + batch_size, len(prompts)))
    answers = [e.answer for e in exchanges]
    has_answers = all(a is not None for a in answers)
    flags = [e.guard_flags for e in exchanges]
    has_flags = all(f is not None for f in flags)
    return Features(
        embeddings=np.concatenate(chunks).astype(np.float32),
        prompt_chars=np.array([len(p) for p in prompts], dtype=np.float64),
        languages=np.array([prompt_language(p) for p in prompts]),
        words=[words(p) for p in prompts],
        answer_chars=np.array([len(a or "") for a in answers], dtype=np.float64) if has_answers else None,
        refusals=np.array([is_refusal(a or "") for a in answers]) if has_answers else None,
        flagged=np.array([bool(f) for f in flags]) if has_flags else None,
    )


# ---------------------------------------------------------------- tests


def _memberships(n_total: int, n_first: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(permutations + 1, n_total) 0/1 rows: row 0 the observed split (first n_first), the others random."""
    rows = np.zeros((permutations + 1, n_total), dtype=np.float32)
    rows[0, :n_first] = 1
    for p in range(1, permutations + 1):
        rows[p, rng.permutation(n_total)[:n_first]] = 1
    return rows


def _permutation_p(statistics: np.ndarray) -> float:
    """p-value of statistics[0] among its permutations (statistics[1:]), with the +1 that keeps it valid."""
    return float((1 + np.sum(statistics[1:] >= statistics[0] - 1e-12)) / len(statistics))


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """(unbiased MMD², permutation p-value) of samples x (m, d) and y (n, d), Gaussian kernel."""
    m, n = len(x), len(y)
    z = np.concatenate([x, y]).astype(np.float64)                   # (N, d)
    sq_norms = (z * z).sum(1)
    d2 = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2 * z @ z.T, 0)  # (N, N) squared distances
    np.fill_diagonal(d2, 0)
    bandwidth = float(np.median(d2[np.triu_indices(m + n, 1)])) or 1.0
    kernel = np.exp(-d2 / bandwidth).astype(np.float32)              # (N, N), ones on the diagonal
    member = _memberships(m + n, m, permutations, rng)              # (P+1, N): 1 = counted as x
    row_sums = kernel.sum(1)
    xx = ((member @ kernel) * member).sum(1)                        # Σ_{i,j ∈ x} K_ij, diagonal included
    x_all = member @ row_sums                                       # Σ_{i ∈ x, j} K_ij
    xy = x_all - xx
    yy = kernel.sum() - 2 * xy - xx
    mmd2 = (xx - m) / (m * (m - 1)) + (yy - n) / (n * (n - 1)) - 2 * xy / (m * n)
    return float(mmd2[0]), _permutation_p(mmd2)


def mean_increase_test(x: np.ndarray, y: np.ndarray, permutations: int,
                       rng: np.random.Generator) -> tuple[float, float]:
    """(mean(y) - mean(x), one-sided permutation p-value for mean(y) > mean(x))."""
    values = np.concatenate([x, y]).astype(np.float64)
    member = _memberships(len(values), len(x), permutations, rng)
    x_means = member @ values / len(x)
    y_means = (values.sum() - member @ values) / len(y)
    diffs = y_means - x_means
    return float(diffs[0]), _permutation_p(diffs)


def category_test(x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """(chi-square statistic, permutation p-value) for two samples of category labels."""
    labels, codes = np.unique(np.concatenate([x, y]), return_inverse=True)
    if len(labels) < 2:
        return 0.0, 1.0
    onehot = np.eye(len(labels), dtype=np.float32)[codes]          # (N, C)
    member = _memberships(len(codes), len(x), permutations, rng)    # (P+1, N)
    totals = onehot.sum(0)                                           # (C,)
    in_x = member @ onehot                                           # (P+1, C)
    in_y = totals - in_x
    expected_x = totals * len(x) / len(codes)
    expected_y = totals * len(y) / len(codes)
    chi2 = ((in_x - expected_x) ** 2 / expected_x + (in_y - expected_y) ** 2 / expected_y).sum(1)
    return float(chi2[0]), _permutation_p(chi2)


def ks_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ks_2samp

    result = ks_2samp(x, y)
    return float(result.statistic), float(result.pvalue)


def rate_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(rate(y) - rate(x), Fisher's exact two-sided p-value) for two boolean samples."""
    from scipy.stats import fisher_exact

    table = [[int(x.sum()), int(len(x) - x.sum())], [int(y.sum()), int(len(y) - y.sum())]]
    return float(y.mean() - x.mean()), float(fisher_exact(table).pvalue)


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[bool]]:
    """Holm-adjusted p-values and rejections (family-wise error rate ≤ alpha under any dependence)."""
    k = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(k)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist(), [bool(a <= alpha) for a in adjusted]


# ---------------------------------------------------------------- comparison


@dataclass
class Signal:
    """One signal's test: what was compared, the statistic, the p-value and Holm's decision."""

    name: str
    test: str
    reference: float | dict[str, float] | None = None  # the reference side's summary (mean, rate, mix)
    traffic: float | dict[str, float] | None = None
    statistic: float | None = None
    p_value: float | None = None
    adjusted_p_value: float | None = None
    detected: bool = False
    skipped: str | None = None  # why the test was not run


@dataclass
class DriftReport:
    """The whole comparison, as written to drift.json."""

    reference: str
    traffic: str
    n_reference: int
    n_traffic: int
    alpha: float
    correction: str = "holm"
    signals: list[Signal] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)

    @property
    def tested(self) -> list[Signal]:
        return [s for s in self.signals if s.skipped is None]

    @property
    def drift(self) -> bool:
        return any(s.detected for s in self.signals)

    @property
    def any_p_value(self) -> float:
        """Holm's adjusted p of the smallest p-value (= Bonferroni's): drift on some signal iff ≤ alpha."""
        return min((s.adjusted_p_value for s in self.tested if s.adjusted_p_value is not None), default=1.0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "drift_detected": self.drift, "any_p_value": self.any_p_value}


def _mix(languages: np.ndarray) -> dict[str, float]:
    codes, counts = np.unique(languages, return_counts=True)
    return {str(c): round(float(n) / len(languages), 4) for c, n in sorted(zip(codes, counts, strict=True),
                                                                        key=lambda cn: -cn[1])}


def unseen_rates(vocabulary: set[str], texts: list[list[str]]) -> np.ndarray:
    return np.array([sum(w not in vocabulary for w in ws) / len(ws) if ws else 0.0 for ws in texts])


def compare(reference: Features, traffic: Features, cfg: DriftConfig, reference_name: str = "reference",
            traffic_name: str = "traffic") -> DriftReport:
    """Every signal's test, Holm-corrected over those that could be run."""
    rng = np.random.default_rng(cfg.seed)
    perms = cfg.permutations
    report = DriftReport(reference_name, traffic_name, len(reference), len(traffic), cfg.alpha)
    signals = report.signals

    mmd2, p = mmd_test(reference.embeddings, traffic.embeddings, perms, rng)
    signals.append(Signal("prompt_embedding", "MMD² (Gaussian kernel), permutation", statistic=mmd2, p_value=p))
    stat, p = ks_test(reference.prompt_chars, traffic.prompt_chars)
    signals.append(Signal("prompt_length", "Kolmogorov-Smirnov", float(np.mean(reference.prompt_chars)),
                          float(np.mean(traffic.prompt_chars)), stat, p))
    stat, p = category_test(reference.languages, traffic.languages, perms, rng)
    signals.append(Signal("prompt_language", "chi-square, permutation", _mix(reference.languages),
                          _mix(traffic.languages), stat, p))
    half = rng.permutation(len(reference))
    vocabulary = {w for i in half[: len(half) // 2] for w in reference.words[i]}
    held_out = unseen_rates(vocabulary, [reference.words[i] for i in half[len(half) // 2:]])
    live = unseen_rates(vocabulary, traffic.words)
    stat, p = mean_increase_test(held_out, live, perms, rng)
    signals.append(Signal("prompt_unseen_words", "increase of the mean, permutation", float(held_out.mean()),
                          float(live.mean()), stat, p))

    if reference.answer_chars is None or traffic.answer_chars is None:
        side = "reference" if reference.answer_chars is None else "traffic"
        why = f"the {side} has no answers"
        signals += [Signal("answer_length", "Kolmogorov-Smirnov", skipped=why),
                    Signal("refusal_rate", "Fisher exact", skipped=why)]
    else:
        assert reference.refusals is not None and traffic.refusals is not None
        stat, p = ks_test(reference.answer_chars, traffic.answer_chars)
        signals.append(Signal("answer_length", "Kolmogorov-Smirnov", float(np.mean(reference.answer_chars)),
                              float(np.mean(traffic.answer_chars)), stat, p))
        stat, p = rate_test(reference.refusals, traffic.refusals)
        signals.append(Signal("refusal_rate", "Fisher exact", float(reference.refusals.mean()),
                              float(traffic.refusals.mean()), stat, p))
    if reference.flagged is None or traffic.flagged is None:
        side = "reference" if reference.flagged is None else "traffic"
        signals.append(Signal("guard_flag_rate", "Fisher exact", skipped=f"the {side} has no guard flags logged"))
    else:
        stat, p = rate_test(reference.flagged, traffic.flagged)
        signals.append(Signal("guard_flag_rate", "Fisher exact", float(reference.flagged.mean()),
                              float(traffic.flagged.mean()), stat, p))

    tested = report.tested
    adjusted, rejected = holm([s.p_value or 0.0 for s in tested], cfg.alpha)
    for s, a, r in zip(tested, adjusted, rejected, strict=True):
        s.adjusted_p_value, s.detected = a, r
    return report


# ---------------------------------------------------------------- outputs


def metrics_registry(report: DriftReport):
    """A prometheus-client registry with the drift gauges (per tested signal, and `any`)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    p_value = Gauge(P_VALUE_METRIC, "Drift test p-value per signal (raw; `any`: Holm-adjusted smallest).",
                    ["signal"], registry=registry)
    detected = Gauge(DETECTED_METRIC, "1 when drift is detected on the signal at the family-wise alpha (Holm).",
                     ["signal"], registry=registry)
    for s in report.tested:
        p_value.labels(signal=s.name).set(s.p_value or 0.0)
        detected.labels(signal=s.name).set(int(s.detected))
    p_value.labels(signal="any").set(report.any_p_value)
    detected.labels(signal="any").set(int(report.drift))
    Gauge(LAST_RUN_METRIC, "When the last drift run finished (Unix time).", registry=registry).set(report.created_at)
    return registry


def export_metrics(report: DriftReport, textfile: Path | None = None, pushgateway: str | None = None,
                   job: str = "tuneforge_drift") -> None:
    """Write the gauges for node-exporter's textfile collector and/or push them to a Pushgateway."""
    from prometheus_client import push_to_gateway, write_to_textfile

    registry = metrics_registry(report)
    if textfile is not None:
        textfile.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(textfile), registry)  # written to a temporary file, then renamed
    if pushgateway:
        push_to_gateway(pushgateway, job=job, registry=registry, timeout=10)


def write_json(report: DriftReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")

