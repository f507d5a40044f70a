"""The medical-qa review loop, end to end, with real processes: the tuned model behind the gateway, patients'
questions through it, held answers decided with `tuneforge review`, exported, and read back by
`tuneforge data prepare` as extra training rows.

    python examples/medical-qa/review_loop.py [--model runs/medical-qa/adapter] [--out runs/medical-qa/loop]

1. `tuneforge serve MODEL` and `tuneforge gateway serve` (examples/medical-qa/gateway.yaml, its backend
   pointed at that server, a fresh database under --out).
2. Questions through the `openai` SDK: the eval's held-out questions, the guard test's out-of-data dosing
   questions, a few urgent ones; plus one request above the route's temperature cap.
3. The reviewer: every held answer is listed with `tuneforge review list`, then approved when it holds the
   fact's key, else edited to the leaflet's answer (or the safe refusal, or the urgent-care answer) with
   `tuneforge review approve|edit`. The reviewer here is this script, deciding from the facts in
   make_data.py — a person would read each answer.
4. `tuneforge review export` → reviewed.jsonl, and `tuneforge data prepare` on train.jsonl + reviewed.jsonl.

Prints the counts (answered, held, answered by the grounded rule, refused) and writes them to summary.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import yaml

from tuneforge.core.artifacts import load_artifact
from tuneforge.core.config import ServeConfig
from tuneforge.gateway.keys import KeyPolicy, KeyStore
from tuneforge.gateway.process import start_gateway
from tuneforge.pipeline import start_server, stop_server

HERE = Path(__file__).parent
ROUTE = "linden-vale"
URGENT = ["I have chest pain since taking Linden Allergy Tablets, what should I do?",
          "I think my son had an overdose of Linden Cough Syrup.",
          "I'm pregnant, is the flu vaccination clinic for me?",
          "My father is unconscious, who do I call?"]
URGENT_ANSWER = "This may be an emergency: call 112 now. For anything else, call the clinic on 01632 960 418."


def _make_data():
    spec = importlib.util.spec_from_file_location("medical_make_data", HERE / "make_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tuneforge(*args: str) -> str:
    """One `tuneforge` CLI call; its output."""
    done = subprocess.run([sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, check=True)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="runs/medical-qa/adapter")
    parser.add_argument("--out", type=Path, default=Path("runs/medical-qa/loop"))
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "gateway.db").unlink(missing_ok=True)
    data = _make_data()
    expected = {held: (key, answer) for answer, key, _qs, held in data.CLINIC + data.DOSING}
    expected |= {q: (data.REFUSAL_KEY, data.REFUSAL) for q in data.REFUSE_HELDOUT + data.GUARD_OUT_OF_DATA}
    expected |= {q: ("112", URGENT_ANSWER) for q in URGENT}
    questions = [r["question"] for r in map(json.loads, (HERE / "heldout.jsonl").read_text().splitlines())]
    questions += data.GUARD_OUT_OF_DATA + URGENT

    db = f"sqlite:///{out / 'gateway.db'}"
    config = yaml.safe_load((HERE / "gateway.yaml").read_text())["gateway"]
    server, server_url = start_server(args.model, ServeConfig(served_model_name=ROUTE), out)
    route = config["routes"][ROUTE]
    route["backends"] = [server_url]
    for rule in route["safety"]["topics"]["grounded"]:
        rule["known_file"] = str((HERE / rule["known_file"]).resolve())
    config |= {"database_url": db, "port": 0}
    gateway, gateway_url = start_gateway(config, out)
    counts = {"sent": 0, "answered": 0, "held": 0, "grounded_answer": 0, "refused": 0}
    try:
        key = KeyStore(db).create(KeyPolicy(tenant="linden-vale-patients"))[0]
        client = openai.OpenAI(base_url=gateway_url, api_key=key, max_retries=0)
        try:
            client.chat.completions.create(model=ROUTE, messages=[{"role": "user", "content": "Hi"}], temperature=0.9)
        except openai.BadRequestError as refused:
            counts["temperature_refusal"] = refused.body["message"]
        for question in questions:
            counts["sent"] += 1
            reply = httpx.post(f"{gateway_url}/chat/completions", timeout=300,
                               headers={"Authorization": f"Bearer {key}"},
                               json={"model": ROUTE, "messages": [{"role": "user", "content": question}]})
            if reply.status_code == 202:
                counts["held"] += 1
            elif reply.status_code == 200:
                counts["answered"] += 1
                counts["grounded_answer"] += reply.headers.get("x-tuneforge-guard") == "grounded"
            else:
                counts["refused"] += 1
    finally:
        stop_server(gateway)
        stop_server(server)

    # the reviewer, through the CLI
    listing = tuneforge("review", "list", "--db", db, "--route", ROUTE).splitlines()
    decisions = {"approve": 0, "edit": 0}
    held_by: dict[str, int] = {}  # the guards whose flags held an answer; "sample" when none flagged it
    for line in listing:
        item_id = line.split()[0]
        item = json.loads(tuneforge("review", "show", item_id, "--db", db))
        flagged = sorted({f["guard"] for f in item["verdict"]["findings"] if f["action"] != "log"})
        for guard in flagged or ["sample"]:
            held_by[guard] = held_by.get(guard, 0) + 1
        question = item["messages"][-1]["content"]
        key, answer = expected.get(question, (None, None))
        if key is not None and key.lower() in item["answer"].lower():
            tuneforge("review", "approve", item_id, "--who", "pharmacist-demo", "--db", db,
                      "--reason", "matches the leaflet")
            decisions["approve"] += 1
        else:
            tuneforge("review", "edit", item_id, "--who", "pharmacist-demo", "--db", db, "--answer",
                      answer or data.REFUSAL, "--reason", "corrected to the leaflet / safe answer")
            decisions["edit"] += 1
    exported = tuneforge("review", "export", str(out / "reviewed.jsonl"), "--db", db, "--route", ROUTE)
    tuneforge("data", "prepare", str(HERE / "train.jsonl"), str(out / "reviewed.jsonl"),
                         "-c", str(HERE / "pipeline.yaml"), "-o", str(out / "dataset-with-reviews"))
    dataset = load_artifact(out / "dataset-with-reviews", kind="dataset")
    summary = {**counts, "held_by": held_by, "review": decisions, "exported": exported.strip(),
               "verify": tuneforge("review", "verify", "--db", db).strip(),
               "prepare_rows_in": dataset.metrics["rows_in"], "train_rows": len(
                   (HERE / "train.jsonl").read_text().splitlines())}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
