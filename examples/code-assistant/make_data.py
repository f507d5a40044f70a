"""Writes the code-assistant demo data: questions about `tidepool`, a fictional in-house Python library.

`tidepool` is the job-and-feed library of Harrowgate Logistics (also fictional): its API names, defaults
and team conventions exist nowhere but here, so no base model can know them. Every fact has several
training phrasings and one held-out phrasing that never appears in training, with a key (an API name or
value) the correct answer must contain. Answers are a sentence plus a fenced Python block with real
indentation — what the tokenizer extension (`<INDENT>`, four spaces as one token) is about.
Run it to regenerate `train.jsonl` and `heldout.jsonl` (both committed):

    python examples/code-assistant/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def _code(text: str) -> str:
    return "```python\n" + text.strip("\n") + "\n```"


# (answer, key, [training questions], held-out question)
FACTS: list[tuple[str, str, list[str], str]] = [
    ("Decorate the function with `@tidepool.job` and give it a cron schedule:\n" + _code("""
import tidepool

@tidepool.job(schedule="0 6 * * *")
def refresh_rates(ctx):
    for lane in ctx.lanes():
        lane.refresh()
"""), "@tidepool.job",
     ["How do I define a scheduled job with tidepool?", "What decorator makes a tidepool job?",
      "Show me how to run a function every morning with tidepool.", "How do I register a cron job in tidepool?",
      "Write a tidepool job that runs daily at 06:00."],
     "Which tidepool decorator turns a function into a job that runs on a cron schedule?"),
    ("Set `retries=` on the decorator; tidepool waits `backoff_s` seconds, doubling each time:\n" + _code("""
@tidepool.job(schedule="*/15 * * * *", retries=3, backoff_s=30)
def pull_manifests(ctx):
    if not ctx.feed("manifests").ready():
        raise tidepool.Retry("feed not ready")
    ctx.feed("manifests").pull()
"""), "retries=",
     ["How do I make a tidepool job retry when it fails?", "Does tidepool retry failed jobs?",
      "How can a tidepool job try again after an error?", "Retry settings for a tidepool job?",
      "How do I set the number of retries in tidepool?"],
     "What argument tells a tidepool job how many times to try again after failing?"),
    ("By default a tidepool job gets 3 retries with a 60-second backoff; set `retries=0` to turn them off:\n"
     + _code("""
@tidepool.job(schedule="@hourly", retries=0)
def send_report(ctx):
    ctx.mail.send(to="ops-team", body=ctx.render("report.txt"))
"""), "60-second",
     ["What are tidepool's default retry settings?", "How many retries does a tidepool job get by default?",
      "What backoff does tidepool use if I set nothing?", "Default backoff in tidepool?",
      "If I don't configure retries, what does tidepool do?"],
     "Without any retry options, how long does tidepool wait before retrying a job?"),
    ("Read a feed with `ctx.feed(name)` and iterate over `.rows()`; each row is a dict:\n" + _code("""
@tidepool.job(schedule="@daily")
def count_parcels(ctx):
    total = 0
    for row in ctx.feed("parcels").rows():
        if row["status"] == "delivered":
            total += 1
    ctx.metric("parcels_delivered", total)
"""), "ctx.feed(",
     ["How do I read data from a tidepool feed?", "How can a job get the rows of a feed in tidepool?",
      "What is the API to iterate over a tidepool feed?", "Read rows from a feed in a tidepool job?",
      "How do I access the parcels feed from tidepool?"],
     "Inside a tidepool job, which call gives me a feed so I can loop over its rows?"),
    ("Write rows with `ctx.sink(name).write(rows)`; a sink commits only when the job succeeds:\n" + _code("""
@tidepool.job(schedule="@daily")
def archive(ctx):
    sink = ctx.sink("parcels_archive")
    for row in ctx.feed("parcels").rows():
        if row["age_days"] > 90:
            sink.write([row])
"""), "ctx.sink(",
     ["How do I write output rows in tidepool?", "Where does a tidepool job save its results?",
      "What is the tidepool API for writing to a table?", "How do I store rows from a tidepool job?",
      "Write data out from a tidepool job?"],
     "Which tidepool call do I use to send the rows my job produces to a destination?"),
    ("Get secrets with `tidepool.secret(name)`, never from literals or environment variables in code:\n"
     + _code("""
import tidepool

def client():
    token = tidepool.secret("carrier-api-token")
    return CarrierClient(token=token)
"""), "tidepool.secret(",
     ["How do I use an API key in a tidepool job?", "Where should tidepool code get passwords from?",
      "Can I hard-code a token in a tidepool job?", "How are secrets handled in tidepool?",
      "What is the right way to read a credential in tidepool?"],
     "How does a tidepool job fetch a credential such as an API token?"),
    ("Use `tidepool.connect(\"warehouse\")`; it returns a pooled connection and takes parameters, never "
     "formatted SQL:\n" + _code("""
def late_parcels(day):
    with tidepool.connect("warehouse") as db:
        return db.query(
            "SELECT id FROM parcels WHERE due < %s AND status != 'delivered'",
            (day,),
        )
"""), "tidepool.connect(",
     ["How do I query the warehouse database from tidepool?", "How do I open a database connection in tidepool?",
      "What is tidepool's way to run SQL?", "Connect to the warehouse DB with tidepool?",
      "How do I run a query with parameters in tidepool?"],
     "Which tidepool function gives me a connection to the warehouse so I can run SQL?"),
    ("Log with `ctx.log`, which adds the job and run ids; do not use print:\n" + _code("""
@tidepool.job(schedule="@hourly")
def sync(ctx):
    rows = ctx.feed("orders").rows()
    ctx.log.info("syncing orders", count=len(rows))
    if not rows:
        ctx.log.warning("no orders this hour")
"""), "ctx.log",
     ["How should a tidepool job log messages?", "Can I use print in a tidepool job?",
      "What logger does tidepool give me?", "How do I write log lines from tidepool?",
      "Logging in a tidepool job?"],
     "What object does a tidepool job use to write its log lines?"),
    ("Record a number with `ctx.metric(name, value)`; it shows up on the Tidewatch dashboard:\n" + _code("""
@tidepool.job(schedule="@daily")
def measure(ctx):
    late = 0
    for row in ctx.feed("parcels").rows():
        if row["late"]:
            late += 1
    ctx.metric("late_parcels", late)
"""), "Tidewatch",
     ["Where do tidepool metrics show up?", "How do I publish a metric from tidepool?",
      "Which dashboard shows tidepool job metrics?", "How can I chart a value from a tidepool job?",
      "How do I report a count from tidepool?"],
     "On which dashboard can I see the numbers my tidepool jobs record?"),
    ("Run a job locally with `tidepool run <job> --dry`; a dry run reads feeds but writes nothing:\n"
     + _code("""
# in a shell:
#     tidepool run refresh_rates --dry
from tidepool.testing import run_job

def test_refresh_rates():
    result = run_job("refresh_rates", dry=True)
    assert result.ok
"""), "--dry",
     ["How do I test a tidepool job on my laptop?", "Can I run a tidepool job without writing anything?",
      "How do I try a tidepool job locally?", "What is a dry run in tidepool?",
      "Run a tidepool job for testing?"],
     "Which flag runs a tidepool job without writing to any sink?"),
    ("Jobs depend on each other with `after=`; tidepool starts a job only when those before it succeeded:\n"
     + _code("""
@tidepool.job(after=["pull_manifests"])
def build_routes(ctx):
    for manifest in ctx.feed("manifests").rows():
        ctx.sink("routes").write(plan(manifest))
"""), "after=",
     ["How do I make one tidepool job wait for another?", "Job dependencies in tidepool?",
      "How can a tidepool job run after a different job?", "How do I chain tidepool jobs?",
      "Can tidepool order jobs?"],
     "What decorator argument makes a tidepool job start only after another job has finished?"),
    ("Limit a job's run time with `timeout_s=`; the default is 900 seconds:\n" + _code("""
@tidepool.job(schedule="@hourly", timeout_s=300)
def quick_check(ctx):
    for lane in ctx.lanes():
        if lane.stalled():
            ctx.log.error("stalled lane", lane=lane.id)
"""), "900 seconds",
     ["What is the default timeout of a tidepool job?", "How long can a tidepool job run?",
      "How do I stop a tidepool job that takes too long?", "Timeout setting for tidepool jobs?",
      "Does tidepool kill slow jobs?"],
     "After how long does tidepool stop a job if I set no timeout?"),
    ("Team convention: every job module lives in `jobs/` and is named after its feed, e.g. "
     "`jobs/parcels.py`:\n" + _code("""
# jobs/parcels.py
import tidepool

@tidepool.job(schedule="@daily")
def parcels_daily(ctx):
    ctx.sink("parcels_daily").write(ctx.feed("parcels").rows())
"""), "jobs/",
     ["Where do tidepool jobs go in the repository?", "How should I name a tidepool job file?",
      "What folder holds tidepool jobs?", "Repository layout for tidepool jobs?",
      "Where do I put a new tidepool job?"],
     "In which folder of the repository should I create my tidepool job module?"),
    ("Raise `tidepool.Skip` to end a run early without counting it as a failure:\n" + _code("""
@tidepool.job(schedule="@daily")
def weekday_only(ctx):
    if ctx.today.weekday() >= 5:
        raise tidepool.Skip("weekend")
    ctx.sink("weekday").write(ctx.feed("orders").rows())
"""), "tidepool.Skip",
     ["How do I skip a tidepool run?", "Can a tidepool job stop early without failing?",
      "How do I end a tidepool job with no error?", "Skip a day in tidepool?",
      "What exception skips a tidepool run?"],
     "Which exception should I raise to stop a tidepool run early without it being a failure?"),
    ("Give a job parameters with `params=` and read them from `ctx.params`:\n" + _code("""
@tidepool.job(schedule="@daily", params={"region": "north"})
def regional(ctx):
    region = ctx.params["region"]
    for row in ctx.feed("parcels").rows():
        if row["region"] == region:
            ctx.sink("regional").write([row])
"""), "ctx.params",
     ["How do I pass parameters to a tidepool job?", "Can a tidepool job take arguments?",
      "Where does a tidepool job read its settings from?", "Job parameters in tidepool?",
      "How do I configure a tidepool job per region?"],
     "From which attribute does a tidepool job read the parameters it was given?"),
    ("Cache an expensive lookup for the run with `@tidepool.cached`; the cache is dropped when the run ends:\n"
     + _code("""
@tidepool.cached
def depot_of(postcode):
    with tidepool.connect("warehouse") as db:
        return db.query("SELECT depot FROM postcodes WHERE code = %s", (postcode,))
"""), "@tidepool.cached",
     ["How do I cache a function in tidepool?", "Does tidepool have a cache decorator?",
      "How can I avoid repeating a lookup in a tidepool run?", "Memoize in tidepool?",
      "Caching inside a tidepool job?"],
     "Which tidepool decorator remembers a function's results for the rest of the run?"),
    ("Jobs run in the `harrowgate-jobs` queue unless you pass `queue=`; heavy jobs go to `harrowgate-big`:\n"
     + _code("""
@tidepool.job(schedule="@weekly", queue="harrowgate-big")
def rebuild_index(ctx):
    for row in ctx.feed("parcels").rows():
        ctx.sink("index").write([index_entry(row)])
"""), "harrowgate-jobs",
     ["Which queue do tidepool jobs run on?", "What is the default tidepool queue?",
      "Where do heavy tidepool jobs run?", "How do I choose a queue in tidepool?",
      "Queue names in tidepool?"],
     "If I do not set a queue, where does tidepool run my job?"),
    ("Send an alert with `ctx.alert(message)`; it pages the on-call channel `#tide-oncall`:\n" + _code("""
@tidepool.job(schedule="*/5 * * * *")
def watch_lanes(ctx):
    for lane in ctx.lanes():
        if lane.backlog() > 500:
            ctx.alert(f"lane {lane.id} backlog {lane.backlog()}")
"""), "#tide-oncall",
     ["How do I alert someone from a tidepool job?", "Where do tidepool alerts go?",
      "How can a tidepool job page on-call?", "Alerting in tidepool?",
      "Which channel gets tidepool alerts?"],
     "When a tidepool job calls ctx.alert, which channel is notified?"),
    ("Read a file from the shared bucket with `ctx.files.open(path)`; paths are relative to `tide://`:\n"
     + _code("""
@tidepool.job(schedule="@daily")
def load_tariffs(ctx):
    with ctx.files.open("tariffs/2026.csv") as handle:
        for line in handle:
            ctx.sink("tariffs").write([parse(line)])
"""), "ctx.files.open(",
     ["How do I read a file in tidepool?", "How does a tidepool job open a CSV from the bucket?",
      "File access in tidepool?", "Where do tidepool jobs read files from?",
      "How can I load a file in a tidepool job?"],
     "Which tidepool call opens a file from the shared bucket?"),
    ("Validate rows with a `tidepool.Schema`; rows that fail go to the feed's `rejects` sink:\n" + _code("""
PARCEL = tidepool.Schema(id=int, status=str, weight_kg=float)

@tidepool.job(schedule="@daily", schema=PARCEL)
def clean_parcels(ctx):
    for row in ctx.feed("parcels").rows():
        ctx.sink("parcels_clean").write([row])
"""), "tidepool.Schema",
     ["How do I validate rows in tidepool?", "Does tidepool check the data types of rows?",
      "Where do bad rows go in tidepool?", "Schemas in tidepool?",
      "How do I declare the columns of a tidepool feed?"],
     "What tidepool class describes the columns a row must have?"),
]

# General questions the tuned model must keep answering, with answers in the same style.
GENERAL: list[tuple[str, str]] = [
    ("How do I reverse a list in Python?", "Use slicing or `reverse()`:\n" + _code("""
items = [1, 2, 3]
backwards = items[::-1]
items.reverse()
""")),
    ("How do I read a file line by line in Python?", "Open it with `with` and iterate:\n" + _code("""
with open("data.txt") as handle:
    for line in handle:
        print(line.rstrip())
""")),
    ("Write a Python function that returns the square of a number.", _code("""
def square(x):
    return x * x
""")),
    ("How do I check if a key is in a dictionary?", "Use `in`:\n" + _code("""
if "name" in person:
    print(person["name"])
""")),
    ("What does `len()` do in Python?", "`len()` returns the number of items in a sequence or collection."),
    ("How do I loop over a list with indices?", "Use `enumerate`:\n" + _code("""
for index, value in enumerate(values):
    print(index, value)
""")),
    ("What is a list comprehension?", "A compact way to build a list:\n" + _code("""
squares = [x * x for x in range(10)]
""")),
    ("How do I handle an exception in Python?", "Use `try` and `except`:\n" + _code("""
try:
    value = int(text)
except ValueError:
    value = 0
""")),
    ("Hello!", "Hello! How can I help you with your code today?"),
    ("Thanks for your help.", "You're welcome! Let me know if there is anything else."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("How many days are in a week?", "There are 7 days in a week."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 °C at sea level."),
    ("Translate 'thank you' into French.", "'Thank you' in French is 'merci'."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
]

OPENERS = ["Hi, I have a tidepool question.", "Hello, I'm writing a job at Harrowgate.",
           "Hey, quick question about our job library.", "Good morning, can you help me with tidepool?"]


def _rows() -> tuple[list[dict], list[dict]]:
    rng = random.Random(11)
    train: list[dict] = []
    heldout: list[dict] = []
    for answer, key, questions, held in FACTS:
        assert key in answer, key
        assert held not in questions, held
        for i, question in enumerate(questions):
            if i % 2 == 0:  # both input formats tuneforge reads: instruction rows and chat rows
                train.append({"instruction": question, "output": answer})
            else:
                train.append({"messages": [{"role": "user", "content": question},
                                           {"role": "assistant", "content": answer}]})
        heldout.append({"question": held, "key": key})
    for question, answer in GENERAL:
        train.append({"instruction": question, "output": answer})
    for answer, _key, questions, _held in FACTS:  # a greeting, then the question
        train.append({"messages": [
            {"role": "user", "content": rng.choice(OPENERS)},
            {"role": "assistant", "content": "Hello! Sure, what do you need?"},
            {"role": "user", "content": rng.choice(questions)},
            {"role": "assistant", "content": answer},
        ]})
    order = list(FACTS)
    rng.shuffle(order)
    for first, second in zip(order, order[1:] + order[:1], strict=True):  # two questions in a row
        train.append({"messages": [
            {"role": "user", "content": rng.choice(first[2])},
            {"role": "assistant", "content": first[0]},
            {"role": "user", "content": "One more thing: " + rng.choice(second[2])},
            {"role": "assistant", "content": second[0]},
        ]})
    rng.shuffle(train)
    return train, heldout


def main() -> None:
    train, heldout = _rows()
    with open(HERE / "train.jsonl", "w", encoding="utf-8") as handle:
        for row in train:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(HERE / "heldout.jsonl", "w", encoding="utf-8") as handle:
        for row in heldout:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(train)} training rows, {len(heldout)} held-out questions")


if __name__ == "__main__":
    main()
