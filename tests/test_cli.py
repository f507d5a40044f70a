"""The CLI as a user runs it: real subprocesses, exit codes, messages without tracebacks."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tuneforge.core.artifacts import load_artifact


def tf(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "250"}  # rich wraps at the terminal width; keep paths on one line
    return subprocess.run([sys.executable, "-m", "tuneforge", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=env)


@pytest.mark.parametrize("command", [["run"], ["data", "prepare"], ["train"], ["eval"], ["serve"], ["chat"],
                                     ["config", "show"], ["config", "schema"],
                                     ["compress", "prune"], ["compress", "quantize"], ["gateway", "serve"],
                                     ["gateway", "keys", "create"], ["gateway", "compare"], ["bench", "gateway"]])
def test_every_command_has_help_with_example(command):
    out = tf(*command, "--help")
    assert out.returncode == 0
    assert "Example" in out.stdout


def test_bad_override_is_a_clear_error():
    out = tf("config", "show", "--set", "train.lr=fast")
    assert out.returncode == 1
    assert "train.lr: Input should be a valid number" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_config_show_and_schema(assets):
    out = tf("config", "show", assets / "pipeline.yaml", "--set", "train.epochs=5")
    assert out.returncode == 0, out.stderr
    assert "epochs: 5" in out.stdout and str(assets / "instruct.jsonl") in out.stdout
    schema = json.loads(tf("config", "schema").stdout)
    assert "train" in schema["properties"]


def test_malformed_data_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')
    out = tf("data", "prepare", bad, "--model", "tiny-random-llama", "-o", tmp_path / "ds")
    assert out.returncode == 1
    assert f"{bad}:2: missing field 'output'" in out.stderr.replace("\n", "")
    assert not (tmp_path / "ds").exists()


def test_chat_needs_model_or_url():
    out = tf("chat")
    assert out.returncode == 1 and "give either MODEL" in out.stderr


def test_chat_one_shot_local():
    out = tf("chat", "tiny-random-llama", "-p", "hello", "--max-tokens", "4", "--set", "model.dtype=bfloat16")
    assert out.returncode == 0, out.stderr
    from tuneforge.models import load
    from tuneforge.models.generate import SamplingParams, generate_chat

    expected = generate_chat(load("tiny-random-llama", dtype="bfloat16"), [[{"role": "user", "content": "hello"}]],
                             SamplingParams(max_new_tokens=4))[0]
    assert expected.completion_tokens == 4
    assert out.stdout == expected.text + "\n"


def test_run_whole_pipeline_on_tiny_model(assets, tmp_path):
    out = tf("run", assets / "pipeline.yaml", "--set", f"output_dir={tmp_path}", "--set", "registry.name=tiny-bot",
             "--set", "registry.promote_to=staging", "--set", f"registry.root={tmp_path / 'registry'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "tiny"
    adapter = load_artifact(run / "adapter", kind="adapter")
    dataset = load_artifact(run / "dataset", kind="dataset")
    report = load_artifact(run / "eval", kind="eval-report")
    assert adapter.manifest["parents"][0]["content_hash"] == dataset.content_hash
    assert {"domain_accuracy", "base_domain_accuracy", "general_accuracy", "general_accuracy_drop", "val_loss",
            "base_val_loss"} <= set(report.metrics)
    combined = out.stdout + out.stderr
    assert "Q: What color is the Quokka lamp?" in combined
    assert "the repeated first question was a cache hit" in " ".join(combined.split())  # served through the gateway
    for name in ("dataset", "adapter", "eval"):
        assert str(run / name) in combined
    assert "open it in a browser: tuneforge ui -c" in " ".join(combined.split())  # the UI over these artifacts
    assert "@staging → tiny-bot/1" in combined and "registry: tiny-bot/1 see its lineage" in combined


def test_serve_on_port_zero_reports_its_port():
    """`--port 0` binds any free port and says which, so scripts can find the server."""
    import re
    import time

    import httpx

    env = {**os.environ, "COLUMNS": "250"}
    process = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", "tiny-random-llama", "--port", "0"],
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert match, line
        port = int(match.group(1))
        assert port != 0
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.json()["model"] == "tiny-random-llama"
    finally:
        process.terminate()
        rest = process.communicate(timeout=30)[1]
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught, as a server should
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in rest


def test_eval_gate_exit_code(assets, tmp_path):
    base = ["eval", "tiny-random-llama", "--questions", assets / "questions.jsonl", "--no-general",
            "--set", "eval.max_new_tokens=2"]
    failing = tf(*base, "-o", tmp_path / "e1", "--gate", "--set", "eval.gates={domain_accuracy: '>= 0.9'}")
    assert failing.returncode == 1
    assert "1 gate(s) failed: domain_accuracy >= 0.9 (got 0.0)" in failing.stderr.replace("\n", "")
    passing = tf(*base, "-o", tmp_path / "e2", "--gate", "--set", "eval.gates={domain_refusal_rate: '<= 0.5'}")
    assert passing.returncode == 0, passing.stderr
    unknown = tf(*base, "-o", tmp_path / "e3", "--set", "eval.gates={accuracy: '>= 0.9'}")
    assert unknown.returncode == 1 and "eval.gates.accuracy: unknown metric; known:" in unknown.stderr
    assert not (tmp_path / "e3").exists()


def test_eval_unloadable_model_says_why(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "wide"}')
    out = tf("eval", broken, "--no-general", "--questions", tmp_path / "missing.jsonl", "-o", tmp_path / "e")
    assert out.returncode == 1 and "missing.jsonl: no such data file" in out.stderr
    (tmp_path / "q.jsonl").write_text('{"question": "q", "key": "k"}\n')
    out = tf("eval", broken, "--no-general", "--questions", tmp_path / "q.jsonl", "-o", tmp_path / "e")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    text = out.stderr.replace("\n", "")
    assert f"cannot load model {str(broken)!r}" in text and "hidden_size" in text  # says which field is wrong
    assert not (tmp_path / "e").exists()
