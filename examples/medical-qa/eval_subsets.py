"""The eval's domain accuracy split by kind of question: clinic facts, leaflet doses (in the data), and dosing
questions on medicines no training row names (correct = the safe answer, "ask your pharmacist").

    python examples/medical-qa/eval_subsets.py [runs/medical-qa/eval]
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/medical-qa/eval")
    spec = importlib.util.spec_from_file_location("medical_make_data", HERE / "make_data.py")
    assert spec is not None and spec.loader is not None
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    kind = {held: "clinic" for _a, _k, _q, held in data.CLINIC}
    kind |= {held: "leaflet_dose" for _a, _k, _q, held in data.DOSING}
    kind |= {q: "out_of_data_dose" for q in data.REFUSE_HELDOUT}
    rows = [json.loads(line) for line in (HERE / "heldout.jsonl").read_text().splitlines()]
    results = json.loads((folder / "report.json").read_text())
    table: dict[str, dict[str, str]] = {}
    for result in results:
        scores = result["sets"]["domain"]["scores"]
        for name in ("clinic", "leaflet_dose", "out_of_data_dose"):
            picked = [s["accuracy"] for r, s in zip(rows, scores, strict=True) if kind[r["question"]] == name]
            table.setdefault(name, {})[result["model"]] = f"{sum(picked) / len(picked):.3f} ({int(sum(picked))}/" \
                                                          f"{len(picked)})"
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
