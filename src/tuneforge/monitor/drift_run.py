"""`tuneforge monitor drift` end to end: read, scrub, sample and embed both sides (progress bar), compare,
then write drift.json, drift.html and the gauges. The tests are `monitor.drift`, the HTML `monitor.drift_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.core.errors import DataError
from tuneforge.core.monitor_config import DriftConfig
from tuneforge.monitor.drift import (
    DriftReport,
    Embed,
    compare,
    export_metrics,
    featurize,
    read_reference,
    sample,
    scrub,
    write_json,
)
from tuneforge.monitor.drift_report import write_html
from tuneforge.monitor.traffic import read_traffic


def run(traffic: str | Path, reference: str | Path, cfg: DriftConfig | None = None, out_dir: Path | None = None,
        metrics_out: Path | None = None, pushgateway: str | None = None,
        encoder: Embed | None = None) -> DriftReport:
    """Read, scrub, sample and embed both sides (progress bar), compare, then write drift.json and
    drift.html to `out_dir` and the gauges to `metrics_out` / `pushgateway`."""
    from tuneforge.core.progress import progress_bar

    cfg = cfg or DriftConfig()
    rng = np.random.default_rng(cfg.seed)
    live = sample(read_traffic(traffic), cfg.max_traffic, rng)
    ref = sample(read_reference(reference, cfg.split), cfg.max_reference, rng)
    for side, rows, where in (("traffic", live, traffic), ("reference", ref, reference)):
        if len(rows) < cfg.min_samples:
            raise DataError(f"{where}: {len(rows)} {side} prompts, fewer than drift.min_samples="
                            f"{cfg.min_samples}: too few for any test to say much")
    if cfg.scrub_pii:
        live, ref = scrub(live), scrub(ref)
    if encoder is None:
        import torch

        from tuneforge.core.encoder import Encoder

        encoder = Encoder(threads=max(1, torch.get_num_threads())).encode
    with progress_bar() as bar:
        features = []
        for side, rows in (("reference", ref), ("traffic", live)):
            task = bar.add_task(f"embedding {side}", total=len(rows), info="all-MiniLM-L6-v2")

            def advance(done: int, task: Any = task) -> None:
                bar.update(task, completed=done)

            features.append(featurize(rows, encoder, cfg.batch_size, advance))
    report = compare(features[0], features[1], cfg, str(reference), str(traffic))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(report, out_dir / "drift.json")
        write_html(report, features[0], features[1], out_dir / "drift.html")
    if metrics_out is not None or pushgateway:
        export_metrics(report, metrics_out, pushgateway)
    return report
