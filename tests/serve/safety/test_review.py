"""The review queue: decisions, the append-only audit, export, restarts, PostgreSQL, the HTTP API and the CLI."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
import sqlalchemy
from tests.servers import postgres as postgres_server
from typer.testing import CliRunner

from tuneforge.serve.safety.cli import app
from tuneforge.serve.safety.review import ReviewError, ReviewQueue

MESSAGES = [{"role": "system", "content": "You are a careful medical assistant."},
            {"role": "user", "content": "Can I take ibuprofen with <EMAIL>'s prescription?"}]


@pytest.fixture
def queue(tmp_path):
    q = ReviewQueue(f"sqlite:///{tmp_path / 'review.db'}")
    yield q
    q.close()


def test_hold_decide_release_and_export(queue, tmp_path):
    a = queue.hold(MESSAGES, "Yes, 400 mg.", {"flagged": True}, route="medical", placeholders={"<EMAIL>": "a@b.cd"})
    b = queue.hold(MESSAGES, "Ask <EMAIL>'s doctor.", route="medical", placeholders={"<EMAIL>": "a@b.cd"})
    c = queue.hold(MESSAGES, "Sure, double it.", route="medical")
    assert [i.id for i in queue.list()] == [a, b, c] and queue.release(a) is None
    queue.decide(a, "edit", "dr.kim", "dose depends on weight", answer="Ask your pharmacist first.")
    queue.decide(b, "approve", "dr.kim")
    queue.decide(c, "reject", "dr.lee", "unsafe")
    assert queue.list() == [] and {i.status for i in queue.list(None)} == {"edited", "approved", "rejected"}
    assert queue.release(b) == "Ask a@b.cd's doctor."  # re-identified for the caller only
    assert queue.release(c) is None
    rows = queue.export(tmp_path / "out.jsonl")
    assert rows == [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in rows] == ["Ask your pharmacist first.", "Ask <EMAIL>'s doctor."]
    assert rows[0]["messages"][:2] == MESSAGES and rows[0]["source"] == f"review:{a}"
    instruction = queue.export(fmt="instruction")
    assert instruction[0] == {"instruction": MESSAGES[1]["content"], "output": "Ask your pharmacist first.",
                              "source": f"review:{a}", "system": MESSAGES[0]["content"]}


def test_export_rows_load_in_the_data_pipeline(queue, tmp_path):
    from tuneforge.data.formats import convert_row

    queue.decide(queue.hold(MESSAGES, "Ask your pharmacist."), "approve", "dr.kim")
    for fmt in ("chat", "instruction"):
        row = convert_row(queue.export(fmt=fmt)[0], "review.jsonl:1")
        assert row["messages"][-1] == {"role": "assistant", "content": "Ask your pharmacist."}


def test_decisions_are_checked(queue):
    item = queue.hold(MESSAGES, "x")
    with pytest.raises(ReviewError, match="corrected answer"):
        queue.decide(item, "edit", "dr.kim")
    with pytest.raises(ReviewError, match="reviewer"):
        queue.decide(item, "approve", " ")
    with pytest.raises(ReviewError, match="no review item"):
        queue.decide("nope", "approve", "dr.kim")
    queue.decide(item, "approve", "dr.kim")
    with pytest.raises(ReviewError, match="already decided"):
        queue.decide(item, "reject", "dr.lee")


def test_audit_is_append_only_and_chained(queue):
    item = queue.hold(MESSAGES, "first")
    queue.decide(item, "edit", "dr.kim", "tone", answer="second")
    entries = queue.audit(item)
    assert [(e.action, e.who, e.before, e.after) for e in entries] == [
        ("hold", "gateway", None, "first"), ("edit", "dr.kim", "first", "second")]
    assert queue.verify_audit() == []
    for statement in ("UPDATE review_audit SET who = 'mallory'", "DELETE FROM review_audit"):
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"), queue.engine.begin() as conn:
            conn.execute(sqlalchemy.text(statement))
    with queue.engine.begin() as conn:  # someone with file access drops the trigger and rewrites history
        conn.execute(sqlalchemy.text("DROP TRIGGER review_audit_no_update"))
        conn.execute(sqlalchemy.text("UPDATE review_audit SET who = 'mallory' WHERE action = 'edit'"))
    assert queue.verify_audit() == ["audit row 2 does not match its hash chain"]


WRITER = textwrap.dedent("""
    import os, sys
    from tuneforge.serve.safety.review import ReviewQueue
    q = ReviewQueue(sys.argv[1])
    ids = [q.hold([{"role": "user", "content": f"q{i}"}], f"a{i}", route="r") for i in range(5)]
    q.decide(ids[0], "approve", "dr.kim")
    print(" ".join(ids), flush=True)
    os.kill(os.getpid(), 9)  # no clean shutdown: what hold() and decide() returned must already be on disk
""")


def test_queue_survives_a_killed_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    proc = subprocess.run([sys.executable, "-c", WRITER, url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ids = proc.stdout.split()
    queue = ReviewQueue(url)  # a new process's view
    assert [i.id for i in queue.list(None)] == ids
    assert [i.status for i in queue.list(None)] == ["approved"] + ["pending"] * 4
    assert len(queue.audit()) == 6 and queue.verify_audit() == []
    queue.decide(ids[1], "reject", "dr.lee")  # and it goes on where it stopped
    assert len(queue.list()) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER = textwrap.dedent("""
    import sys
    import uvicorn
    from fastapi import FastAPI, Header, HTTPException
    from tuneforge.serve.safety.review import ReviewQueue
    from tuneforge.serve.safety.review_api import result_router, review_router

    def reviewer(authorization: str = Header("")) -> str:
        if authorization != "Bearer reviewer-key":
            raise HTTPException(401, "reviewers only")
        return "dr.kim"

    queue = ReviewQueue(sys.argv[1])
    app = FastAPI()
    app.include_router(review_router(queue, reviewer))
    app.include_router(result_router(queue))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


@pytest.fixture
def server(tmp_path):
    url, port = f"sqlite:///{tmp_path / 'review.db'}", _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, url, str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(base + "/v1/reviews/none", timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "review server did not start"
            time.sleep(0.1)
    yield base, url
    proc.terminate()
    proc.wait(timeout=30)


def test_http_review_round_trip(server):
    base, url = server
    item = ReviewQueue(url).hold(MESSAGES, "Take 400 mg.", {"flagged": True}, route="medical",
                                 placeholders={"<EMAIL>": "a@b.cd"})
    auth = {"Authorization": "Bearer reviewer-key"}
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get(f"/v1/reviews/{item}").status_code == 202
        assert client.get("/review/items").status_code == 401
        listed = client.get("/review/items", headers=auth).json()["items"]
        assert [i["id"] for i in listed] == [item] and "placeholders" not in listed[0]
        bad = client.post(f"/review/items/{item}/decision", headers=auth, json={"decision": "edit"})
        assert bad.status_code == 400 and "corrected answer" in bad.json()["detail"]
        done = client.post(f"/review/items/{item}/decision", headers=auth,
                           json={"decision": "edit", "answer": "Ask <EMAIL>'s pharmacist.", "reason": "dose"})
        assert done.json()["status"] == "edited" and done.json()["decided_by"] == "dr.kim"
        again = client.post(f"/review/items/{item}/decision", headers=auth, json={"decision": "approve"})
        assert again.status_code == 409
        assert client.get(f"/v1/reviews/{item}").json() == {"id": item, "status": "edited",
                                                             "answer": "Ask a@b.cd's pharmacist."}
        shown = client.get(f"/review/items/{item}", headers=auth).json()
        assert [e["action"] for e in shown["audit"]] == ["hold", "edit"]
        assert client.get("/review/audit/verify", headers=auth).json() == {"intact": True, "problems": []}
        rows = [json.loads(line) for line in client.get("/review/export", headers=auth).text.splitlines()]
        assert rows[0]["messages"][-1]["content"] == "Ask <EMAIL>'s pharmacist."
        assert client.get("/v1/reviews/unknown").status_code == 404


def test_cli(tmp_path):
    db = str(tmp_path / "review.db")
    queue = ReviewQueue(f"sqlite:///{db}")
    first, second = queue.hold(MESSAGES, "Take 400 mg.", route="medical"), queue.hold(MESSAGES, "Rest.")
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--db", db])
    assert listed.exit_code == 0 and first in listed.output and second in listed.output
    assert runner.invoke(app, ["approve", first, "--who", "dr.kim", "--db", db]).exit_code == 0
    rejected = runner.invoke(app, ["reject", first, "--who", "dr.lee", "--db", db])
    assert rejected.exit_code == 1 and "already decided" in rejected.output
    edited = runner.invoke(app, ["edit", second, "--who", "dr.kim", "--answer", "-", "--db", db], input="Rest well.")
    assert edited.exit_code == 0, edited.output
    shown = json.loads(runner.invoke(app, ["show", second, "--db", db]).output)
    assert shown["final_answer"] == "Rest well." and shown["audit"][-1]["who"] == "dr.kim"
    out = tmp_path / "rows.jsonl"
    exported = runner.invoke(app, ["export", str(out), "--db", db, "--format", "instruction"])
    assert exported.exit_code == 0 and [json.loads(x)["output"] for x in out.read_text().splitlines()] == [
        "Take 400 mg.", "Rest well."]
    assert runner.invoke(app, ["verify", "--db", db]).output.strip() == "audit intact"
    assert runner.invoke(app, ["list", "--db", db, "--status", "maybe"]).exit_code != 0


@pytest.fixture
def postgres():
    with postgres_server() as url:
        yield url


def test_postgres_backend_and_restart(postgres):
    queue = ReviewQueue(postgres)
    item = queue.hold(MESSAGES, "Take 400 mg.", route="medical")
    queue.decide(item, "edit", "dr.kim", answer="Ask your pharmacist.")
    queue.close()
    reopened = ReviewQueue(postgres)
    assert reopened.get(item).final_answer == "Ask your pharmacist." and reopened.verify_audit() == []
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"), reopened.engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM review_audit"))
    assert len(reopened.audit(item)) == 2
    reopened.close()
