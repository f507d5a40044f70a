// tuneforge ui: the pages' behaviour, plain JavaScript (no build step). Charts: uPlot (vendored).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

class ApiError extends Error {
  constructor(message, fields) { super(message); this.fields = fields || {}; }
}

async function api(method, url, body) {
  const reply = await fetch(url, {method, headers: body === undefined ? {} : {"Content-Type": "application/json"},
                                   body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = {error: text}; }
  if (!reply.ok) throw new ApiError((data && data.error) || `${reply.status} ${reply.statusText}`, data && data.fields);
  return data;
}

function banner(message, kind = "error") {
  const el = $("#banner");
  el.textContent = message;
  el.className = `banner ${kind}`;
  el.hidden = !message;
}

function clearErrors(root = document) {
  $$("[data-error-for]", root).forEach((el) => { el.textContent = ""; });
  $$(".invalid", root).forEach((el) => el.classList.remove("invalid"));
  banner("");
}

// An error from the API: each named field gets its message next to it; the whole message goes on top.
function showError(err, root = document) {
  const fields = (err && err.fields) || {};
  for (const [name, message] of Object.entries(fields)) {
    const slot = $(`[data-error-for="${CSS.escape(name)}"]`);
    if (slot) slot.textContent = message;
    const input = $(`[data-field="${CSS.escape(name)}"]`);
    if (input) {
      input.classList.add("invalid");
      const group = input.closest("details");
      if (group) group.open = true;
    }
  }
  banner(err.message || String(err));
}

function identity() { return $("#identity").value.trim(); }

// A message that outlives the reload an action ends with (the reloaded page shows the new state).
function reloadWith(message) {
  sessionStorage.setItem("tuneforge-flash", message);
  location.reload();
}

function collect(form) {
  const values = {};
  $$("[data-field]", form).forEach((el) => {
    values[el.dataset.field] = el.dataset.kind === "checkbox" ? el.checked : el.value;
  });
  return values;
}

function chart(el, title, label, color, width = 360) {
  const opts = {title, width, height: 200, scales: {x: {time: false}},
                series: [{label: "step"}, {label, stroke: color, width: 2, points: {show: true, size: 4}}],
                axes: [{label: "step"}, {}]};
  return new uPlot(opts, [[], []], el);
}

// Poll a job until it ends; `onEvents` gets new step records, `onStatus` every status.
async function follow(jobId, onStatus, onEvents) {
  let seen = 0;
  for (;;) {
    let job;
    try { job = await api("GET", `/api/jobs/${jobId}?after=${seen}`); } catch (e) { showError(e); return null; }
    seen += job.events.length;
    if (onEvents && job.events.length) onEvents(job.events);
    onStatus(job);
    if (!["starting", "running"].includes(job.state)) return job;
    await new Promise((r) => setTimeout(r, 700));
  }
}

function jobLine(job) {
  if (job.state === "failed") return `failed: ${job.error}`;
  if (job.state === "done") return "done";
  return job.state + "…";
}

// ---- Data ----------------------------------------------------------------------------------------------

function dataPage() {
  $("#upload-button").onclick = async () => {
    clearErrors();
    const files = $("#upload").files;
    if (!files.length) { showError(new ApiError("file: choose a file first", {file: "choose a file first"})); return; }
    try {
      for (const file of files) {
        const reply = await fetch(`/api/uploads/${encodeURIComponent(file.name)}`, {method: "PUT", body: file});
        const data = await reply.json();
        if (!reply.ok) throw new ApiError(data.error, data.fields);
      }
      location.reload();
    } catch (e) { showError(e); }
  };
  $("#prepare-button").onclick = async () => {
    clearErrors();
    const files = $$('input[name="pick"]:checked').map((el) => el.value);
    try {
      const job = await api("POST", "/api/jobs/prepare", {files, values: collect($("#data-form"))});
      const done = await follow(job.id, (j) => { $("#prepare-status").textContent = `prepare ${j.id}: ${jobLine(j)}`; });
      if (done && done.state === "done") location.href = `/data?dataset=${encodeURIComponent(done.result.artifact)}#report`;
      else if (done) banner(`prepare failed: ${done.error}`);
    } catch (e) { showError(e); }
  };
}

// ---- Train ---------------------------------------------------------------------------------------------

function trainPage() {
  const wanted = new URLSearchParams(location.search).get("dataset");
  if (wanted) $("#dataset").value = wanted;
  const body = () => ({dataset: $("#dataset").value, values: collect($("#train-form"))});
  let charts = null;
  let points = new Map();

  function draw() {
    const steps = Array.from(points.keys()).sort((a, b) => a - b);
    const rows = steps.map((s) => points.get(s));
    charts.loss.setData([steps, rows.map((r) => r.loss)]);
    charts.lr.setData([steps, rows.map((r) => r.lr)]);
    charts.tps.setData([steps, rows.map((r) => r.tokens_per_second)]);
  }

  async function show(jobId) {
    $("#run").hidden = false;
    $("#run-id").textContent = jobId;
    if (!charts) {
      charts = {loss: chart($("#chart-loss"), "training loss", "loss", "#d8703b"),
                lr: chart($("#chart-lr"), "learning rate", "lr", "#3b7dd8"),
                tps: chart($("#chart-tps"), "tokens / second", "tok/s", "#3bb273")};
    }
    points = new Map();
    const done = await follow(jobId, (job) => {
      $("#run-state").textContent = jobLine(job);
      $("#run-state").className = job.state;
      const last = points.size ? points.get(Math.max(...points.keys())) : null;
      $("#run-info").textContent = last ? `step ${last.step} / ${last.total_steps} · loss ${last.loss.toFixed(4)} · lr ${last.lr.toExponential(2)} · ${Math.round(last.tokens_per_second)} tok/s`
        + (job.resumed_from_step ? ` · resumed from step ${job.resumed_from_step}` : "") : "waiting for the first step…";
      $("#stop-button").disabled = !["starting", "running"].includes(job.state);
      $("#resume-button").disabled = !["stopped", "failed"].includes(job.state);
      if (job.state === "done") $("#run-info").innerHTML += ` · artifact <code>${job.result.artifact}</code> · <a href="/eval?model=${encodeURIComponent(job.result.artifact)}">evaluate it</a>`;
      if (job.log) { $("#run-log").hidden = false; $("#run-log").textContent = job.log; }
    }, (events) => { for (const e of events) points.set(e.step, e); draw(); });
    return done;
  }

  $("#plan-button").onclick = async () => {
    clearErrors();
    try {
      const job = await api("POST", "/api/jobs/plan", body());
      const done = await follow(job.id, (j) => { $("#plan").textContent = `memory plan: ${jobLine(j)}`; });
      if (done && done.state === "done") {
        const r = done.result;
        $("#plan").innerHTML = `<b>memory plan</b> (${r.device}): ${r.plan} — budget ${r.budget_gib} GiB: `
          + (r.fits ? '<span class="pass">fits</span>' : '<span class="fail">does not fit</span>');
      }
    } catch (e) { showError(e); }
  };
  $("#train-button").onclick = async () => {
    clearErrors();
    try { const job = await api("POST", "/api/jobs/train", body()); await show(job.id); } catch (e) { showError(e); }
  };
  $("#stop-button").onclick = async () => {
    try { await api("POST", `/api/jobs/${$("#run-id").textContent}/stop`); } catch (e) { showError(e); }
  };
  $("#resume-button").onclick = async () => {
    clearErrors();
    try { await api("POST", `/api/jobs/${$("#run-id").textContent}/resume`); await show($("#run-id").textContent); }
    catch (e) { showError(e); }
  };
  // the page after a reload: the newest run, whatever state it is in
  api("GET", "/api/jobs?kind=train").then((jobs) => { if (jobs.length) show(jobs[0].id); }).catch(showError);
}

// ---- Eval ----------------------------------------------------------------------------------------------

function evalPage() {
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted) $("#model").value = wanted;
  $("#eval-button").onclick = async () => {
    clearErrors();
    try {
      const job = await api("POST", "/api/jobs/eval", {model: $("#model").value, dataset: $("#dataset").value,
                                                       values: collect($("#eval-form"))});
      const done = await follow(job.id, (j) => { $("#eval-status").textContent = `eval ${j.id}: ${jobLine(j)}`; });
      if (done && done.state === "done") location.href = `/eval?report=${encodeURIComponent(done.result.artifact)}#report`;
      else if (done) banner(`eval failed: ${done.error}`);
    } catch (e) { showError(e); }
  };
}

// ---- Registry ------------------------------------------------------------------------------------------

function gateList(gates) {
  if (!gates.length) return "no gates required";
  return gates.map((g) => `<span class="${g.passed ? "pass" : "fail"}">${g.gate} ${g.rule}: ${g.value === null ? (g.note || "not measured") : Number(g.value).toFixed(4)} ${g.passed ? "pass" : "FAIL"}</span>`).join(" · ");
}

function registryPage() {
  const user = () => identity() || undefined;
  $("#register-button").onclick = async () => {
    clearErrors();
    try {
      const r = await api("POST", "/api/registry/register", {artifact: $("#reg-artifact").value, name: $("#reg-name").value,
                                                             evals: [$("#reg-eval").value], user: user()});
      reloadWith(`${r.created ? "registered" : "already registered:"} ${r.ref} (${r.evals} eval report(s))`);
    } catch (e) { showError(e); }
  };
  for (const row of $$("tr[data-ref]")) {
    const ref = row.dataset.ref;
    const result = row.closest(".model").querySelector(".move-result");
    const alias = () => row.querySelector(".alias-input").value.trim();
    row.querySelector(".gates-button").onclick = async () => {
      clearErrors();
      try {
        const r = await api("GET", `/api/registry/gates?ref=${encodeURIComponent(ref)}&alias=${encodeURIComponent(alias())}`);
        result.innerHTML = `@${alias()} for ${ref}: ${gateList(r.gates)}; approvals needed ${r.approvals}`;
      } catch (e) { showError(e); }
    };
    row.querySelector(".promote-button").onclick = async () => {
      clearErrors();
      try {
        const m = await api("POST", "/api/registry/promote", {ref, alias: alias(), user: user()});
        reloadWith((m.status === "moved" ? `@${m.alias} → ${m.model}/${m.to}` : `${m.model}/${m.to} → @${m.alias} waits for ${m.approvals_needed} approval(s)`)
          + ` · gates: ${gateList(m.gates)}`);
      } catch (e) { showError(e); result.textContent = e.message; }
    };
  }
  for (const button of $$(".approve-button, .rollback-button")) {
    const model = button.closest(".model");
    const action = button.classList.contains("approve-button") ? "approve" : "rollback";
    button.onclick = async () => {
      clearErrors();
      try {
        const m = await api("POST", `/api/registry/${action}`, {name: model.dataset.model, alias: button.dataset.alias, user: user()});
        reloadWith(`${action}: @${m.alias} ${m.status === "moved" ? "→ " + m.model + "/" + m.to : "still waits (" + m.approved_by.length + "/" + m.approvals_needed + ")"}`);
      } catch (e) { showError(e); }
    };
  }
}

// ---- Playground ----------------------------------------------------------------------------------------

function playgroundPage() {
  const panes = {a: {history: []}, b: {history: []}};
  let cap = null;
  $("#compare").onchange = () => { $("#pane-b").hidden = !$("#compare").checked; };

  $("#connect-button").onclick = async () => {
    clearErrors();
    try {
      const r = await api("GET", `/api/serve/models?url=${encodeURIComponent($("#server").value)}`);
      const names = r.data.map((m) => m.id);
      for (const select of $$(".model-select")) select.innerHTML = names.map((n) => `<option>${n}</option>`).join("");
      if (names.length > 1) $$(".model-select")[1].value = names[1];
      cap = Math.min(...r.data.map((m) => m.max_model_len || Infinity));
      if (Number.isFinite(cap)) { $("#max_tokens").max = cap; $("#max-cap").textContent = `(≤ ${cap}, the server's context)`; }
      $("#server-info").textContent = `${names.length} model(s): ${names.join(", ")}`;
    } catch (e) { showError(new ApiError(e.message, {url: e.message})); }
  };

  function bubble(pane, role, text) {
    const el = document.createElement("div");
    el.className = `bubble ${role}`;
    el.textContent = text;
    $(`#pane-${pane} .chat`).appendChild(el);
    return el;
  }

  async function ask(side, prompt) {
    const pane = panes[side];
    const model = $(`#pane-${side} .model-select`).value;
    pane.history.push({role: "user", content: prompt});
    bubble(side, "user", prompt);
    const out = bubble(side, "assistant", "");
    out.classList.add("streaming");
    const maxTokens = Number($("#max_tokens").value);
    if (cap !== null && maxTokens > cap) throw new ApiError(`max_tokens: at most ${cap} on this server`, {max_tokens: `at most ${cap}`});
    const reply = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({url: $("#server").value, model, messages: pane.history, max_tokens: maxTokens,
                            temperature: Number($("#temperature").value), top_p: Number($("#top_p").value)})});
    if (!reply.ok) { const d = await reply.json(); throw new ApiError(d.error, d.fields); }
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", text = "", id = null, chunks = 0;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const event = JSON.parse(line.slice(6));
        if (event.error) { out.classList.remove("streaming"); out.classList.add("error"); out.textContent = `error: ${event.error.message}`; return; }
        id = event.id || id;
        const delta = event.choices && event.choices[0] && event.choices[0].delta;
        if (delta && delta.content) { text += delta.content; chunks += 1; out.textContent = text; out.dataset.chunks = chunks; }
      }
    }
    out.classList.remove("streaming");
    out.classList.add("done");
    out.dataset.responseId = id || "";
    pane.history.push({role: "assistant", content: text});
    const thumbs = document.createElement("div");
    thumbs.className = "thumbs";
    for (const [label, score] of [["▲ good", 1], ["▼ bad", -1]]) {
      const b = document.createElement("button");
      b.textContent = label;
      b.className = score > 0 ? "thumb-up" : "thumb-down";
      b.onclick = async () => {
        try {
          const r = await api("POST", "/api/feedback", {url: $("#server").value, response_id: id, score});
          thumbs.textContent = r.recorded === "gateway" ? `recorded by the gateway (${r.where})`
            : `recorded locally in ${r.where} (this server has no /v1/feedback)`;
        } catch (e) { showError(e); }
      };
      thumbs.appendChild(b);
    }
    out.after(thumbs);
  }

  $("#send-button").onclick = async () => {
    clearErrors();
    const prompt = $("#prompt").value.trim();
    if (!prompt) { showError(new ApiError("messages: write a prompt first", {messages: "write a prompt first"})); return; }
    $("#prompt").value = "";
    const sides = $("#compare").checked ? ["a", "b"] : ["a"];
    try { await Promise.all(sides.map((s) => ask(s, prompt))); } catch (e) { showError(e); }
  };
  $("#reset-button").onclick = () => {
    for (const side of ["a", "b"]) { panes[side].history = []; $(`#pane-${side} .chat`).innerHTML = ""; }
  };
  if ($("#server").value) $("#connect-button").click();
}

// ---- Review --------------------------------------------------------------------------------------------

function reviewPage() {
  for (const card of $$(".review-item")) {
    for (const button of $$(".decide", card)) {
      button.onclick = async () => {
        clearErrors();
        try {
          const item = await api("POST", `/api/review/${card.dataset.id}`, {
            decision: button.dataset.decision, who: identity(), reason: $(".reason", card).value,
            answer: button.dataset.decision === "edit" ? $(".edit-answer", card).value : undefined});
          $(".state", card).textContent = item.status;
          $(".status", card).textContent = `${item.status} by ${item.decided_by}`;
          $$(".decide", card).forEach((b) => { b.disabled = true; });
        } catch (e) { showError(e); }
      };
    }
  }
}

// ---- Monitoring ----------------------------------------------------------------------------------------

function monitorPage() {
  let timer = null, charts = null, previous = null;
  const started = Date.now();
  const series = {t: [], tps: [], running: [], waiting: []};
  const ms = (s) => (s === null || s === undefined ? "-" : `${(s * 1000).toFixed(0)} ms`);

  async function tick() {
    const url = $("#server").value;
    let m;
    try { m = await api("GET", `/api/metrics?url=${encodeURIComponent(url)}`); clearErrors(); }
    catch (e) { showError(new ApiError(e.message, {url: e.message})); return; }
    const now = (Date.now() - started) / 1000;
    const tps = previous ? Math.max(0, (m.generation_tokens - previous.tokens) / (now - previous.t)) : 0;
    previous = {t: now, tokens: m.generation_tokens};
    $("#tiles").hidden = false;
    $("#m-ttft").textContent = `${ms(m.ttft.p50)} / ${ms(m.ttft.p95)}`;
    $("#m-tps").textContent = `${tps.toFixed(1)} (${m.generation_tokens} total)`;
    $("#m-queue").textContent = `${m.running} / ${m.waiting}`;
    $("#m-kv").textContent = `${(100 * m.kv_cache_usage).toFixed(0)} %`;
    $("#m-errors").textContent = `${m.errors}`;
    $("#m-errors").className = m.errors ? "fail" : "";
    $("#m-finished").textContent = Object.entries(m.finished).map(([k, v]) => `${k} ${v}`).join(", ") || "0";
    series.t.push(now); series.tps.push(tps); series.running.push(m.running); series.waiting.push(m.waiting);
    if (!charts) {
      charts = {
        tps: new uPlot({title: "output tokens / s", width: 420, height: 200, scales: {x: {time: false}},
                        series: [{label: "s"}, {label: "tok/s", stroke: "#3bb273", width: 2}]}, [[], []], $("#chart-mon-tps")),
        queue: new uPlot({title: "requests", width: 420, height: 200, scales: {x: {time: false}},
                          series: [{label: "s"}, {label: "running", stroke: "#3b7dd8", width: 2},
                                   {label: "waiting", stroke: "#d83b3b", width: 2}]}, [[], [], []], $("#chart-mon-queue")),
      };
    }
    charts.tps.setData([series.t, series.tps]);
    charts.queue.setData([series.t, series.running, series.waiting]);
  }
  $("#watch-button").onclick = () => { if (timer) clearInterval(timer); tick(); timer = setInterval(tick, 2000); };
  if ($("#server").value) $("#watch-button").click();
}

// ---- every page ------------------------------------------------------------------------------------------

(() => {
  const flash = sessionStorage.getItem("tuneforge-flash");
  if (flash) { sessionStorage.removeItem("tuneforge-flash"); $("#banner").innerHTML = flash; $("#banner").className = "banner ok"; $("#banner").hidden = false; }
  const who = $("#identity");
  if (!who) return;
  const params = new URLSearchParams(location.search);
  who.value = localStorage.getItem("tuneforge-identity") || "";
  who.onchange = () => {
    localStorage.setItem("tuneforge-identity", who.value.trim());
    if (document.body.dataset.page === "registry") location.href = `/registry?user=${encodeURIComponent(who.value.trim())}`;
  };
  if (document.body.dataset.page === "registry" && who.value && params.get("user") !== who.value) {
    location.replace(`/registry?user=${encodeURIComponent(who.value)}`);
  }
})();
