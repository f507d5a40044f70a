"""Drift detection on real text: the customer-service training data against itself (false alarms over many
seeds), against the general-knowledge eval questions and French support questions (drift), and the output
signals; the CLI's files and gauges; clear errors for bad traffic files."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tuneforge.core.artifacts import create_artifact
from tuneforge.core.errors import DataError
from tuneforge.core.monitor_config import DriftConfig
from tuneforge.monitor.drift import (
    compare,
    featurize,
    holm,
    is_refusal,
    read_reference,
    words,
)
from tuneforge.monitor.traffic import Exchange, read_traffic

ROOT = Path(__file__).parents[2]
TRAIN = ROOT / "examples" / "customer-service" / "train.jsonl"
GENERAL = ROOT / "src" / "tuneforge" / "eval" / "data" / "general.jsonl"
FRENCH = ROOT / "tests" / "assets" / "drift" / "french_support.jsonl"
SEEDS = 200


@pytest.fixture(scope="module")
def embed():
    """The packaged encoder, each text embedded once for the whole module."""
    from tuneforge.core.encoder import Encoder

    encoder, cache = Encoder(threads=2), {}

    def lookup(texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, encoder.encode(new), strict=True))
        return np.stack([cache[t] for t in texts])

    return lookup


@pytest.fixture(scope="module")
def support(embed):
    """The customer-service training rows (prompts and answers) as features."""
    rows = read_reference(TRAIN)
    assert len(rows) == 304 and all(r.answer for r in rows)
    return rows, featurize(rows, embed)


def general_questions() -> list[Exchange]:
    return [Exchange(json.loads(line)["question"], str(json.loads(line)["key"])) for line in GENERAL.open()]


def test_same_distribution_false_alarm_rate_is_at_most_alpha(support):
    """200 seeded splits of one dataset into disjoint reference (150) and traffic (100): exchangeable samples,
    so any signal's alarm is a false one. Holm keeps the family-wise rate at alpha = 5 %."""
    _, features = support
    alarms, by_signal = 0, {}
    for seed in range(SEEDS):
        order = np.random.default_rng(1000 + seed).permutation(len(features))
        report = compare(features.take(order[:150]), features.take(order[150:250]),
                         DriftConfig(seed=seed, permutations=200))
        assert len(report.tested) == 6  # guard flags are not in a training set
        alarms += report.drift
        for s in report.signals:
            by_signal[s.name] = by_signal.get(s.name, 0) + s.detected
    rate = alarms / SEEDS
    print(f"false-alarm rate over {SEEDS} seeds: {rate:.3f}; per signal: {by_signal}")
    assert rate <= 0.05


def test_another_domain_is_detected_on_embeddings_length_and_vocabulary(support, embed):
    _, reference = support
    traffic = featurize(general_questions(), embed)
    report = compare(reference, traffic, DriftConfig())
    detected = {s.name for s in report.signals if s.detected}
    assert {"prompt_embedding", "prompt_length", "prompt_unseen_words", "answer_length"} <= detected
    embedding = next(s for s in report.signals if s.name == "prompt_embedding")
    assert embedding.p_value == pytest.approx(1 / 501)  # no permutation comes near the observed MMD²
    assert report.drift and report.any_p_value <= 0.05


def test_support_questions_in_french_are_a_language_drift(support, embed):
    _, reference = support
    traffic = featurize(read_traffic(FRENCH), embed)
    report = compare(reference, traffic, DriftConfig())
    language = next(s for s in report.signals if s.name == "prompt_language")
    assert language.detected and language.traffic["fr"] >= 0.8 and language.reference["en"] >= 0.8
    assert next(s for s in report.signals if s.name == "answer_length").skipped == "the traffic has no answers"


def test_refusals_and_guard_flags_are_output_drift(support, embed):
    rows, _ = support
    rng = np.random.default_rng(7)
    order = rng.permutation(len(rows))
    baseline = [Exchange(rows[i].prompt, rows[i].answer, ["pii"] if k % 25 == 0 else []) for k, i in
                enumerate(order[:150])]
    refusal = "I'm sorry, but I can't help with that request."
    live = [Exchange(rows[i].prompt, refusal if k % 3 == 0 else rows[i].answer,
                     ["injection"] if k % 4 == 0 else []) for k, i in enumerate(order[150:270])]
    report = compare(featurize(baseline, embed), featurize(live, embed), DriftConfig())
    by_name = {s.name: s for s in report.signals}
    assert by_name["refusal_rate"].detected and by_name["refusal_rate"].traffic == pytest.approx(40 / 120)
    assert by_name["guard_flag_rate"].detected and by_name["guard_flag_rate"].reference == pytest.approx(6 / 150)
    assert not by_name["prompt_embedding"].detected  # the prompts are the same distribution


def test_holm_refuses_in_step_down_order():
    adjusted, rejected = holm([0.01, 0.04, 0.03, 0.5], 0.05)
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert rejected == [True, False, False, False]


def test_words_and_refusals():
    assert words("Order 12345 arrived 两天") == ["order", "0", "arrived", "两", "天"]
    assert is_refusal("I cannot help with that.") and is_refusal("I'm sorry, but I am not able to do this")
    assert not is_refusal("Sorry for the delay: your refund was paid today.")


def _dataset(path: Path) -> Path:
    from tuneforge.data.store import write_split

    rows = [{"messages": [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.answer}]}
            for r in read_reference(TRAIN)]
    with create_artifact(path, "dataset") as writer:
        write_split(writer.path / "train.parquet", rows)
    return path


class _Pushgateway(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802
        self.bodies.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_cli_writes_report_summary_textfile_and_pushes(tmp_path):
    from tuneforge.cli import app

    dataset = _dataset(tmp_path / "dataset")
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("".join(json.dumps({"prompt": e.prompt, "answer": e.answer}) + "\n"
                               for e in general_questions()))
    server = HTTPServer(("127.0.0.1", 0), _Pushgateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = CliRunner().invoke(app, ["monitor", "drift", str(traffic), "-r", str(dataset), "-o",
                                          str(tmp_path / "out"), "--metrics-out", str(tmp_path / "drift.prom"),
                                          "--pushgateway", f"127.0.0.1:{server.server_port}", "--fail-on-drift"])
    finally:
        server.shutdown()
    assert result.exit_code == 3, result.output
    assert "drift detected" in result.output
    summary = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert summary["drift_detected"] and summary["n_reference"] == 304 and summary["n_traffic"] == 150
    assert summary["correction"] == "holm"
    html = (tmp_path / "out" / "drift.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "prompt_embedding" in html
    prom = (tmp_path / "drift.prom").read_text()
    assert 'tuneforge:drift_detected{signal="prompt_embedding"} 1.0' in prom
    assert 'tuneforge:drift_detected{signal="any"} 1.0' in prom
    assert 'tuneforge:drift_p_value{signal="refusal_rate"} 1.0' in prom
    path, body = _Pushgateway.bodies[-1]
    assert path == "/metrics/job/tuneforge_drift" and b'tuneforge:drift_detected{signal="any"} 1.0' in body


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such traffic file"),
    ("\n\n", "the file is empty"),
    ('{"prompt": "ok"}\n{"prompt": "fine"}\n{"prompt": "broken\n', ":3: not JSON"),
    ('{"prompt": "ok"}\n{"answer": "no prompt"}\n', ":2: needs `prompt`"),
    ('{"prompt": "ok", "guard_flags": "pii"}\n', ":1: `guard_flags` must be a list"),
])
def test_bad_traffic_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "traffic.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_traffic(path)
    assert str(path) in str(info.value)


def test_too_few_requests_is_an_error_before_anything_is_embedded(tmp_path):
    from tuneforge.monitor.drift_run import run

    path = tmp_path / "traffic.jsonl"
    path.write_text('{"prompt": "Where is my parcel?"}\n' * 5)
    with pytest.raises(DataError, match="5 traffic prompts, fewer than drift.min_samples=20"):
        run(path, TRAIN, encoder=lambda texts: pytest.fail("embedded"))


def test_cli_bad_traffic_file_is_one_clear_line_and_exit_1(tmp_path):
    import os
    import subprocess
    import sys

    bad = tmp_path / "traffic.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    env = {**os.environ, "COLUMNS": "250"}
    out = subprocess.run([sys.executable, "-m", "tuneforge", "monitor", "drift", str(bad), "-r", str(TRAIN)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1 and f"{bad}:2: not JSON" in out.stderr and "Traceback" not in out.stderr
    help_text = subprocess.run([sys.executable, "-m", "tuneforge", "monitor", "drift", "--help"],
                               capture_output=True, text=True, env=env, timeout=300).stdout
    assert "Example" in help_text and "--metrics-out" in help_text
