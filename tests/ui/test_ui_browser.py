"""`tuneforge ui` in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium), on the tiny
random model: upload → prepare → train (live curve, reload, stop, resume) → eval → register → promote (gates,
a second identity approves) → chat streams in from a real `tuneforge serve` → review queue → monitoring → stop.

Screenshots of every page go to the test's tmp folder (`ui-shots/`); docs/ui/*.png are picked from them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from tuneforge.core.net import free_port, wait_ready

ASSETS = Path(__file__).parents[1] / "assets"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 90  # seconds any one condition may take on a loaded 2-core machine


def _browser():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail("chromium and chromium-driver are not installed: `make setup` installs them (apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1360,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    # the driver's path is given: Selenium Manager never runs (it would try to download one)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@pytest.fixture
def stack(tmp_path):
    """A `tuneforge serve` on the tiny model and a `tuneforge ui` over a copy of the test assets' pipeline."""
    assets = tmp_path / "assets"
    shutil.copytree(ASSETS, assets)
    (assets / "weird.jsonl").write_text('{"foo": "no instruction, no messages"}\n')
    (assets / "broken.jsonl").write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": \n')
    serve_port, ui_port = free_port(), free_port()
    serve = _start([sys.executable, "-m", "tuneforge", "serve", "tiny-random-llama", "--port", str(serve_port),
                    "--served-model-name", "tiny", "--set", "serve.max_tokens=24"], tmp_path / "serve.log")
    review_db = f"sqlite:///{tmp_path / 'review.db'}"
    ui = _start([sys.executable, "-m", "tuneforge", "ui", "-c", str(assets / "pipeline.yaml"), "--port", str(ui_port),
                 "--workspace", str(tmp_path / "ws"), "--server", f"http://127.0.0.1:{serve_port}/v1",
                 "--review-db", review_db, "--set", f"registry.root={tmp_path / 'registry'}",
                 "--set", "registry.policies={staging: {gates: {domain_accuracy: '>= 0'}}, production: "
                 "{gates: {domain_accuracy: '>= 0'}, approvals: 1}}"], tmp_path / "ui.log")
    try:
        wait_ready(f"http://127.0.0.1:{ui_port}/static/ui.css", ui, deadline_s=120)
        yield {"ui": f"http://127.0.0.1:{ui_port}", "serve": f"http://127.0.0.1:{serve_port}", "serve_process": serve,
               "ui_process": ui, "tmp": tmp_path, "assets": assets, "review_db": review_db}
    finally:
        _stop(ui)
        _stop(serve)


def test_whole_flow_in_chromium(stack, tmp_path):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    shots = tmp_path / "ui-shots"
    shots.mkdir()
    ui, assets = stack["ui"], stack["assets"]
    driver = _browser()
    # an action that reloads the page detaches the elements a condition was looking at (stale, missing, or
    # Chromium's "node does not belong to the document"): look again until the condition holds or time is up
    wait = WebDriverWait(driver, WAIT, ignored_exceptions=[WebDriverException])

    def css(selector: str):
        return driver.find_element(By.CSS_SELECTOR, selector)

    def text_of(selector: str) -> str:
        return css(selector).text

    def until_text(selector: str, needle: str) -> None:
        wait.until(lambda d: needle in d.find_element(By.CSS_SELECTOR, selector).text,
                   message=f"{selector} never showed {needle!r}")

    def field(name: str):
        return css(f'[data-field="{name}"]')

    def set_field(name: str, value: str) -> None:
        element = field(name)
        driver.execute_script("const d = arguments[0].closest('details'); if (d) d.open = true;", element)
        element.clear()
        element.send_keys(value)

    def act_as(name: str) -> None:
        """The identity box top right (what the registry and the review queue record), as a person types it."""
        driver.execute_script("const w = document.getElementById('identity'); w.value = arguments[0]; "
                              "w.dispatchEvent(new Event('change'));", name)
        wait.until(lambda d: f"user={name}" in d.current_url)

    def shot(name: str) -> None:
        driver.save_screenshot(str(shots / f"{name}.png"))

    try:
        # ---- Data: a file that is not JSON is refused at upload, naming its line; nothing is saved
        driver.get(f"{ui}/data")
        css("#upload").send_keys(str(assets / "broken.jsonl"))
        css("#upload-button").click()
        until_text("#banner", "broken.jsonl line 2: not JSON")
        assert not (stack["tmp"] / "ws" / "uploads" / "broken.jsonl").exists()
        css("#upload").clear()
        css("#upload").send_keys("\n".join(str(assets / n) for n in ("instruct.jsonl", "chat.jsonl", "weird.jsonl")))
        css("#upload-button").click()
        uploaded = 'input[name="pick"][value*="/ws/uploads/"]'
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, uploaded)) == 3)
        picks = {Path(e.get_attribute("value")).name: e for e in driver.find_elements(By.CSS_SELECTOR, uploaded)}
        for name, box in picks.items():
            if box.is_selected() != (name == "weird.jsonl"):
                box.click()
        # a row the loader cannot read fails the prepare job with the file and line; no dataset is written
        css("#prepare-button").click()
        until_text("#banner", "weird.jsonl:1: cannot tell the row's format")
        assert not driver.find_elements(By.CSS_SELECTOR, "#datasets")
        picks["weird.jsonl"].click()
        for name in ("instruct.jsonl", "chat.jsonl"):
            picks[name].click()
        # a bad form value: the error sits next to the field, named, and no job starts
        set_field("data.max_length", "8")
        css("#prepare-button").click()
        wait.until(lambda d: "greater than or equal to 16" in
                   d.find_element(By.CSS_SELECTOR, '[data-error-for="data.max_length"]').text)
        assert "data.max_length" in text_of("#banner")
        set_field("data.max_length", "128")
        css("#prepare-button").click()
        wait.until(lambda d: "dataset=" in d.current_url)
        funnel = text_of("#funnel")
        assert "dedup" in funnel and "pii" in funnel
        assert "instruct.jsonl" not in text_of("#pii")  # the PII line is counts by type, not file names
        samples = driver.find_elements(By.CSS_SELECTOR, "#preview .sample")
        assert len(samples) == 3 and "tokens" in samples[0].text and "trained" in samples[0].text
        # trained tokens carry the highlight style that `tuneforge data preview` gives them
        styled = driver.execute_script(
            "return Array.from(document.querySelectorAll('#preview pre span')).filter("
            "s => getComputedStyle(s).backgroundColor !== 'rgba(0, 0, 0, 0)').length")
        assert styled > 0
        assert driver.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth)")
        shot("data")
        dataset = driver.current_url.split("dataset=")[1].split("#")[0]

        # ---- Train: memory plan, then a run that survives a reload, stops and resumes from its checkpoint
        driver.get(f"{ui}/train")
        assert field("train.method").get_attribute("value") == "lora"  # the pipeline's values fill the form
        assert field("train.lr").get_attribute("value") == "0.01"
        set_field("train.max_steps", "5000")  # long enough to be stopped halfway
        set_field("train.epochs", "1000")
        set_field("train.checkpoint_every", "2")
        css("#plan-button").click()
        until_text("#plan", "fits")
        assert "GiB" in text_of("#plan")
        css("#train-button").click()
        until_text("#run-info", "step ")
        run_id = text_of("#run-id")
        driver.refresh()  # the page finds the same run again, from the job's files
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#run-id").text == run_id)

        def step(d) -> int:
            info = d.find_element(By.CSS_SELECTOR, "#run-info").text
            return int(info.split("step ")[1].split()[0]) if info.startswith("step ") else 0

        wait.until(lambda d: step(d) >= 4)
        css("#stop-button").click()
        until_text("#run-state", "stopped")
        stopped_at = step(driver)
        css("#resume-button").click()
        until_text("#run-info", "resumed from step")
        resumed_from = int(text_of("#run-info").split("resumed from step ")[1].split()[0])
        assert 2 <= resumed_from <= stopped_at and resumed_from % 2 == 0  # the newest checkpoint before the stop
        wait.until(lambda d: step(d) > stopped_at + 1)
        css("#stop-button").click()
        until_text("#run-state", "stopped")
        events = httpx.get(f"{ui}/api/jobs/{run_id}").json()["events"]
        steps = [e["step"] for e in events]
        assert steps[: stopped_at] == list(range(1, stopped_at + 1))
        assert steps[stopped_at] == resumed_from + 1  # the resumed run continues after its checkpoint
        assert all(e["tokens_per_second"] > 0 for e in events) and len({e["total_steps"] for e in events}) == 1
        assert driver.execute_script("return document.querySelectorAll('#chart-loss canvas').length") == 1
        # a short run to the end: its adapter is what the next pages use
        set_field("train.max_steps", "12")  # the reload reset the form to the pipeline's values
        set_field("train.epochs", "100")
        css("#train-button").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#run-id").text != run_id)
        until_text("#run-state", "done")
        assert "step 12 / 12" in text_of("#run-info")
        run_id = text_of("#run-id")
        shot("train")
        adapter = httpx.get(f"{ui}/api/jobs/{run_id}").json()["result"]["artifact"]

        # ---- Eval: before/after, gates
        driver.get(f"{ui}/eval?model={adapter}")
        Select(css("#dataset")).select_by_value(unquote(dataset))
        general = field("eval.general")
        if general.is_selected():
            general.click()
        set_field("eval.gates", "{domain_accuracy: '>= 0'}")
        css("#eval-button").click()
        wait.until(lambda d: "report=" in d.current_url)
        metrics = text_of("#metrics")
        assert "domain_accuracy" in metrics and "val_loss" in metrics and "base" in metrics
        assert "pass" in text_of("#gates")
        assert driver.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth)")
        shot("eval")
        report = httpx.get(f"{ui}/api/jobs?kind=eval").json()[0]["result"]["artifact"]

        # ---- Registry: register with the report, promote to staging (gates shown), production needs a second
        # identity
        driver.get(f"{ui}/registry")
        act_as("alice")
        Select(css("#reg-artifact")).select_by_value(adapter)
        Select(css("#reg-eval")).select_by_value(report)
        set_field("name", "tiny-bot")
        css("#register-button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-ref="tiny-bot/1"]'))
        row = css('tr[data-ref="tiny-bot/1"]')
        row.find_element(By.CSS_SELECTOR, ".alias-input").send_keys("staging")
        row.find_element(By.CSS_SELECTOR, ".gates-button").click()
        until_text(".move-result", "domain_accuracy >= 0: 0.0000 pass")
        row.find_element(By.CSS_SELECTOR, ".promote-button").click()
        until_text("#banner", "@staging → tiny-bot/1 · gates: domain_accuracy >= 0: 0.0000 pass")
        wait.until(lambda d: "@staging → 1" in d.find_element(By.CSS_SELECTOR, ".model h2").text)
        row = css('tr[data-ref="tiny-bot/1"]')
        row.find_element(By.CSS_SELECTOR, ".alias-input").send_keys("production")
        row.find_element(By.CSS_SELECTOR, ".promote-button").click()
        until_text("#banner", "tiny-bot/1 → @production waits for 1 approval(s)")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".approve-button"))
        css(".approve-button").click()
        until_text("#banner", "cannot approve")  # the requester cannot approve their own promotion
        act_as("bob")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".approve-button"))
        css(".approve-button").click()
        until_text("#banner", "approve: @production → tiny-bot/1")
        wait.until(lambda d: "@production → 1" in d.find_element(By.CSS_SELECTOR, ".model h2").text)
        history = text_of(".history")
        assert "approve" in history and "bob" in history and "alice" in history and "request" in history
        shot("registry")

        # ---- Playground: answers stream in from the real server, side by side; thumbs are recorded locally
        driver.get(f"{ui}/playground")
        wait.until(lambda d: "tiny" in d.find_element(By.CSS_SELECTOR, "#server-info").text)
        assert css("#max_tokens").get_attribute("max")  # capped by the server's model card
        css("#compare").click()
        css("#max_tokens").clear()
        css("#max_tokens").send_keys("12")
        css("#prompt").send_keys("What color is the Quokka lamp?")
        css("#send-button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".bubble.assistant.done")) == 2)
        answers = driver.find_elements(By.CSS_SELECTOR, ".bubble.assistant.done")
        direct = httpx.post(f"{stack['serve']}/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "What color is the Quokka lamp?"}],
            "max_tokens": 12, "temperature": 0}, timeout=60).json()["choices"][0]["message"]["content"]
        assert direct and all(a.text == direct for a in answers)  # streamed text is the server's answer
        assert int(answers[0].get_attribute("data-chunks")) > 1  # it came in pieces
        response_id = answers[0].get_attribute("data-response-id")
        css(".thumb-up").click()
        until_text(".thumbs", "recorded locally")
        shot("playground")
        feedback = [json.loads(line) for line in (stack["tmp"] / "ws" / "feedback.jsonl").read_text().splitlines()]
        assert feedback[-1]["response_id"] == response_id and feedback[-1]["score"] == 1
        # a max_tokens over the server's serve.max_tokens (24) is refused by the server, and the page says so
        css("#compare").click()
        css("#max_tokens").clear()
        css("#max_tokens").send_keys("200")
        css("#prompt").send_keys("again")
        css("#send-button").click()
        until_text(".bubble.assistant.error", "max_tokens=200 exceeds this server's limit of 24")

        # ---- Review queue: a held answer approved by a named reviewer
        from tuneforge.serve.safety.review import ReviewQueue

        queue = ReviewQueue(stack["review_db"])
        held = queue.hold([{"role": "user", "content": "Can I get a refund after 40 days?"}],
                          "Yes, always, no questions asked.", {"flagged": ["policy"]}, route="support", model="tiny")
        driver.get(f"{ui}/review")
        card = css(f'.review-item[data-id="{held}"]')
        card.find_element(By.CSS_SELECTOR, ".edit-answer").clear()
        card.find_element(By.CSS_SELECTOR, ".edit-answer").send_keys("Refunds are possible within 30 days.")
        card.find_element(By.CSS_SELECTOR, ".reason").send_keys("policy is 30 days")
        card.find_element(By.CSS_SELECTOR, '.decide[data-decision="edit"]').click()
        wait.until(lambda d: "edited by bob" in d.find_element(By.CSS_SELECTOR,
                                                              f'.review-item[data-id="{held}"] .status').text)
        item = queue.get(held)
        assert (item.status, item.decided_by, item.final_answer) == ("edited", "bob",
                                                                     "Refunds are possible within 30 days.")
        queue.close()
        driver.get(f"{ui}/review?status=all")
        shot("review")

        # ---- Monitoring: the server's own /metrics
        driver.get(f"{ui}/monitor")
        until_text("#m-finished", "length")  # the answers so far all ran to max_tokens
        finished = dict(part.split() for part in text_of("#m-finished").split(", "))
        assert sum(float(n) for n in finished.values()) >= 3  # 2 side by side + 1 for the direct comparison
        assert "ms" in text_of("#m-ttft")
        until_text("#m-tps", "total")
        shot("monitor")

        # ---- stopping the UI stops the training it started
        driver.get(f"{ui}/train")
        set_field("train.max_steps", "5000")
        set_field("train.epochs", "1000")
        css("#train-button").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#run-id").text not in ("", run_id))
        last = text_of("#run-id")
        until_text("#run-info", "step ")  # the new run's, not the finished one's "step 12 / 12"
    except BaseException:
        shot("failure")
        raise
    finally:
        driver.quit()
    assert _stop(stack["ui_process"]) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    status = json.loads((stack["tmp"] / "ws" / "jobs" / last / "status.json").read_text())
    assert status["state"] == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(status["pid"], 0)
