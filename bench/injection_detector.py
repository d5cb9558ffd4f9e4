"""The injection guard on phrasings it never saw: trains the semantic head, prints the held-out table.

The corpus (sep/guard/corpus_*.toml) is split by family: a family is one way of wording an order
(or one kind of ordinary post), and no family of the test split is trained on. The head (a
logistic regression on sentence embeddings and hashed character n-grams, sep.guard.detector) is
fitted on the train families and the real excerpts; its threshold is the lowest that flags at
most 0.5% of the real excerpts out of fold (5 folds by family: the false-positive budget binds,
recall is what follows). Then, on the test families only:

* recall: held-out instruction posts flagged (rules alone, detector alone, the guard as shipped);
* false positives: held-out hard negatives flagged, and real texts flagged: the bundled sample's
  titles, and, when ../shared/data is beside the checkout, the Samsung board's posts that are not
  in the trained excerpt (907 of 1,206; their titles, and title with body) and the 1,386
  news-search titles (none of them trained on);
* seconds per 1,000 texts for the guard, in this process after the encoder is loaded;
* the three real titles that came closest to the threshold.

A figure on the corpus is a development figure: the corpus was written by the same hands as the
detector. The real titles are the measure of false positives.
Run: .venv/bin/python bench/injection_detector.py [--write] [--json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

import sep
from sep.guard import detector as D
from sep.guard import injection_of, injections_of

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TARGET_RECALL = 0.95
C = 16.0
REAL_FP_BUDGET = 0.005  # the goal: at most 0.5% of real texts flagged


def design(texts: list[str]) -> sparse.csr_matrix:
    """The head's features as a sparse matrix (embeddings | n-grams) for scikit-learn."""
    emb = D.embeddings(texts)
    rows, cols, vals = [], [], []
    for r, (idx, v) in enumerate(map(D.ngrams, texts)):
        rows += [r] * len(idx)
        cols += list(idx)
        vals += list(v)
    grams = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), 1 << D.HASH_BITS))
    return sparse.hstack([sparse.csr_matrix(emb), grams]).tocsr()


def fit(examples: list[D.Example]) -> D.Head:
    texts = [D.normalise(e.text) for e in examples]
    y = np.array([e.order for e in examples], dtype=int)
    model = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(design(texts), y)
    return D.Head(model.coef_[0].astype(np.float32), float(model.intercept_[0]), 0.5, "")


def threshold(train: list[D.Example]) -> tuple[float, dict]:
    """The lowest threshold that flags at most 0.5% of the real excerpts out of fold (5 folds by family)."""
    families = sorted({e.family for e in train})
    fold = {f: i % 5 for i, f in enumerate(sorted(families, key=lambda f: D.split_of(f + "/fold")))}
    reals = [e for e in train if e.family.startswith("real-")]
    for e in reals:  # the real excerpts are split by text: each is its own family's only source
        fold[e.text] = int(hashlib.sha1(e.text.encode("utf-8")).hexdigest(), 16) % 5
    key = {id(e): fold[e.text] if e.family.startswith("real-") else fold[e.family] for e in train}
    oof: list[tuple[bool, float, str]] = []
    for k in range(5):
        head = fit([e for e in train if key[id(e)] != k])
        held = [e for e in train if key[id(e)] == k]
        oof += [(e.order, s, e.family) for e, s in zip(held, D.scores([e.text for e in held], head))]
    real = sorted((s for order, s, fam in oof if fam.startswith("real-")), reverse=True)
    t = float(real[int(len(real) * REAL_FP_BUDGET)]) + 1e-6
    orders = [s for order, s, _ in oof if order]
    hard = [s for order, s, fam in oof if not order and not fam.startswith("real-")]
    return t, {"oof_recall": float(np.mean([s >= t for s in orders])), "oof_hard_fp": float(np.mean([s >= t for s in hard])),
               "oof_real_fp": float(np.mean([s >= t for s in real]))}


def real_titles() -> dict[str, list[str]]:
    """The bundled sample's titles and, when present, the shared Samsung board posts and news titles."""
    db = sep.open_memory(":memory:")
    sep.import_sample(db)
    out = {"sample": [t for (t,) in db.execute("SELECT title FROM texts").fetchall()]}
    board = SHARED / "naver-board" / "discussion_005930.csv"
    if board.exists():
        csv.field_size_limit(10**9)
        with board.open(encoding="utf-8", errors="replace") as f:
            posts = [r for r in list(csv.reader(f))[1:] if len(r) > 2]
        posts = [r for r in posts if int(hashlib.sha1((r[1] + r[0]).encode("utf-8")).hexdigest(), 16) % 4 != 0]
        out["board titles"] = [r[1] for r in posts]
        out["board posts"] = [f"{r[1]}\n{r[2]}".strip() for r in posts]
    news = SHARED / "ko-text" / "samsung" / "samsung_raw_naver_news.xlsx"
    if news.exists():
        import openpyxl

        sheet = openpyxl.load_workbook(news, read_only=True).active
        out["news"] = [str(r[1]) for r in sheet.iter_rows(min_row=2, values_only=True) if r and len(r) > 1 and r[1]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="Train the head and write sep/guard/head.npz.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    examples = D.corpus()
    train = [e for e in examples if e.split == "train"]
    test = [e for e in examples if e.split == "test"]
    if args.write:
        t, oof = threshold(train)
        head = fit(train)
        fams = sorted({e.family for e in train})
        head = D.Head(head.weights, head.bias, t, f"corpus {D.corpus_hash()}, {len(train)} texts, {len(fams)} train "
                                                     f"families, C={C}, threshold {t:.3f} (out of fold: real flagged {oof['oof_real_fp']:.4f}, "
                                                     f"recall {oof['oof_recall']:.3f})")
        head.save()
        D.packaged_head.cache_clear()
        print(f"wrote {D.HEAD}: {head.trained_on}; out of fold: {oof}", file=sys.stderr)
    head = D.packaged_head()
    orders = [e for e in test if e.order]
    hard = [e for e in test if not e.order]
    det = D.scores([e.text for e in test], head)
    rule = [bool(injection_of(e.text, semantic=False)) for e in test]
    shipped = [bool(x) for x in injections_of([(e.text, None) for e in test])]
    real = real_titles()
    flat = [t for ts in real.values() for t in ts]
    started = time.perf_counter()
    flagged = injections_of([(t, None) for t in flat])
    per_1000 = (time.perf_counter() - started) / len(flat) * 1000
    real_scores = D.scores(flat, head)
    by_source, i = {}, 0
    for src, ts in real.items():
        by_source[src] = {"n": len(ts), "flagged": sum(bool(f) for f in flagged[i:i + len(ts)])}
        i += len(ts)
    titles = [src for src in real if src != "board posts"]  # the goal's measure: titles
    n_titles = sum(by_source[s]["n"] for s in titles)
    f_titles = sum(by_source[s]["flagged"] for s in titles)

    def share(mask: list[bool], of: list[D.Example]) -> float:
        picked = [m for m, e in zip(mask, test) if e in of]
        return sum(picked) / len(picked) if picked else float("nan")

    table = {name: {"recall": share(mask, orders), "hard_fp": share(mask, hard)}
             for name, mask in (("rules", rule), ("detector", [s >= head.threshold for s in det]), ("guard", shipped))}
    closest = sorted(zip(real_scores, flat), key=lambda x: abs(x[0] - head.threshold))[:3]
    missed = [(round(s, 3), e.family, e.text) for e, s, shp in zip(test, det, shipped) if e.order and not shp]
    report = {"head": head.trained_on, "threshold": head.threshold,
              "test_families": {"order": sorted({e.family for e in orders}), "ordinary": sorted({e.family for e in hard})},
              "test_orders": len(orders), "test_hard_negatives": len(hard), "table": table,
              "real": {"titles": n_titles, "titles_flagged": f_titles, "by_source": by_source},
              "seconds_per_1000": round(per_1000, 2), "closest_real": [(round(s, 3), t[:120]) for s, t in closest],
              "missed": missed}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    print(f"head: {head.trained_on}")
    print(f"held-out families: {len(orders)} instruction posts in {len(report['test_families']['order'])} families, "
          f"{len(hard)} hard negatives in {len(report['test_families']['ordinary'])} families")
    print("| layer | held-out orders flagged | held-out hard negatives flagged |\n|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['recall']:.3f} | {row['hard_fp']:.3f} |")
    print(f"\nreal titles flagged by the guard: {f_titles} of {n_titles} ({f_titles / n_titles:.2%}); "
          + ", ".join(f"{k} {v['flagged']} of {v['n']}" for k, v in by_source.items()))
    print(f"seconds per 1,000 texts (guard, encoder loaded): {per_1000:.2f}")
    print("closest real texts to the threshold:")
    for s, t in closest:
        print(f"  {s:.3f} · {' '.join(t.split())[:120]}")
    print("held-out orders the guard missed:")
    for s, fam, t in missed:
        print(f"  {s:.3f} {fam} · {' '.join(t.split())[:100]}")


if __name__ == "__main__":
    main()
