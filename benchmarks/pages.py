"""Render time of every dashboard page with 200 runs in the store vs an empty store.

Each page is rendered in Streamlit's AppTest (the script run a browser triggers, without the
network); the median of `--repeats` reruns after one warm-up. Runs are real store entries
with results written by RunStore.save_result (synthetic predictions, real metrics).

    python benchmarks/pages.py [--runs 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = ["dashboard.py", "pages/1_Dataset.py", "pages/2_Train.py", "pages/3_Compare.py", "pages/4_Predict.py"]
BUDGET_S = 1.0
COMPARE_TWO = "3_Compare.py?runs=a,b"


def fill_store(store, n: int, data: str) -> list[str]:
    """`n` finished runs over a grid of lr x dropout x seed, with 400 test and validation clips."""
    from engine.core.config import RunConfig
    from engine.learn.metrics import evaluate

    rng = np.random.default_rng(0)
    y = np.arange(400) % 8
    ids = [f"clip-{k:04d}" for k in range(400)]
    base = RunConfig(data=data).with_values(**{"train.epochs": 20})
    ids_made = []
    for k in range(n):
        config = base.with_values(**{"train.lr": float(rng.choice([1e-3, 1e-4, 1e-5])),
                                     "model.dropout": float(rng.choice([0.05, 0.1, 0.5])), "train.seed": k})
        run_id = store.create_run(config, name=f"run {k}", tags=("bench",))
        ids_made.append(run_id)
        logits = rng.normal(size=(400, 8))
        logits[np.arange(400), y] += rng.uniform(0.5, 3)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        preds = {s: {"ids": ids, "y": y.tolist(), "probs": probs.round(4).tolist()} for s in ("validation", "test")}
        history = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.1 / e, "val_accuracy": 0.5, "seconds": e}
                   for e in range(1, 21)]
        store.save_result(run_id, SimpleNamespace(
            status="finished", error=None, device="cpu", state_dict={}, standardizer=None, best_epoch=20,
            history=history, step_losses=[1.0] * 200, predictions=preds,
            metrics={s: evaluate(y, probs) for s in ("validation", "test")}))
    return ids_made


def page_seconds(page: str, repeats: int, query: dict | None = None) -> float:
    """Median seconds of one rerun of `page` with URL `query` (after a warm-up run)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    if page != "dashboard.py":
        at.switch_page(page)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    if at.exception:
        raise SystemExit(f"{page} raised: {at.exception[0].value}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(cache: Path, data: str, runs: int, repeats: int) -> dict[str, float]:
    os.environ["MEDLEY_CACHE"] = str(cache)
    os.environ["MEDLEY_DATA"] = data
    from engine.runs.store import RunStore

    store = RunStore()
    ids = fill_store(store, runs, data) if runs else []
    store.close()
    times = {page: page_seconds(page, repeats) for page in PAGES}
    if len(ids) >= 2:  # two runs compared: curves, heatmaps, McNemar and bootstrap on 400 clips
        times[COMPARE_TWO] = page_seconds("pages/3_Compare.py", repeats, {"runs": f"{ids[0]},{ids[1]}"})
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from engine.data.demo import make_demo

    with tempfile.TemporaryDirectory(prefix="bench-pages-") as folder:
        work = Path(folder)
        data = str(make_demo("tiny", root=ROOT / "cache" / "demo" / "tiny"))  # made once, as demo:tiny
        empty = measure(work / "empty", data, 0, args.repeats)
        full = measure(work / "full", data, args.runs, args.repeats)
    print(f"{'page':<22} {'empty store':>12} {f'{args.runs} runs':>10} {'ratio':>7}")
    for page in PAGES:
        print(f"{page:<22} {empty[page]:>11.3f}s {full[page]:>9.3f}s {full[page] / empty[page]:>6.2f}x")
    if COMPARE_TWO in full:
        print(f"{COMPARE_TWO:<22} {'-':>12} {full[COMPARE_TWO]:>9.3f}s")
    slowest = max(full, key=full.get)
    print(f"slowest with {args.runs} runs: {slowest} {full[slowest]:.3f} s (budget {BUDGET_S:.1f} s)")
    print(f"headroom: {BUDGET_S / full[slowest]:.2f}x  (budget / slowest page; below 1 misses the budget)")


if __name__ == "__main__":
    main()
