"""Does the table's local correction (nas/latency/residual.py) predict held-out subnets better?

Offline, from committed latency tables and their held-out ground truth (no timing): for
each batch size, the table's held-out MAPE with the linear calibration only, with the
local correction fitted on its calibration samples (what `nas profile` now writes), and
with the correction also fed the k nearest other held-out subnets, measured (what `nas
verify` adds around a search's picks: the subnet itself is never among them). Also the
spread check behind it: the residual of each held-out subnet's k nearest neighbours as
its prediction.

    python bench/bench_residual.py --out residual_cpu.md
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, header, write_result  # noqa: E402
from nas.arch import Arch  # noqa: E402
from nas.encoding import encode_arch  # noqa: E402
from nas.latency import LatencyTable  # noqa: E402
from nas.latency.residual import Residual  # noqa: E402

# (batch, seed, table, its held-out ground truth); seed 2 came after the correction was
# written, so nothing here was tuned on it
CASES = (("1", 1, "latency_tiny32_cpu.json", "latency_b1_b8_cpu_heldout.csv"),
         ("8", 1, "latency_tiny32_b8_cpu.json", "latency_b1_b8_cpu_heldout.csv"),
         ("64", 1, "latency_tiny32_b64_cpu.json", "latency_b64_truth8_cpu_heldout.csv"),
         ("1", 2, "latency_tiny32_seed2_cpu.json", "latency_b1_b8_seed2_cpu_heldout.csv"),
         ("8", 2, "latency_tiny32_b8_seed2_cpu.json", "latency_b1_b8_seed2_cpu_heldout.csv"))


def _errors(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    rel = np.abs(pred / y - 1)
    return 100 * rel.mean(), 100 * (rel <= 0.10).mean(), 100 * rel.max()


def run_case(batch: str, seed: int, table_file: str, truth_file: str, k: int) -> dict:
    table = LatencyTable.load(RESULTS / table_file)
    space = table.space
    with (RESULTS / truth_file).open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["batch"] == batch and r["stat"] == "min"]
    archs = [Arch.from_dict(json.loads(r["arch"])) for r in rows]
    y = np.array([min(float(r["copy1_ms"]), float(r["copy2_ms"])) for r in rows])
    noise = np.abs(np.array([float(r["copy1_ms"]) / float(r["copy2_ms"]) - 1 for r in rows]))
    table.calibrate(table.calibration["features"], residual=False)
    linear = table.predict(archs)
    t0 = time.perf_counter()
    table.calibrate(table.calibration["features"])
    local = table.predict(archs)
    fit_s = time.perf_counter() - t0
    X = np.array([encode_arch(space, a) for a in archs])
    CX, cres = table._residual_data()
    res = np.log(y / linear)
    dist = ((X[:, None] - X[None]) ** 2).sum(-1)
    nearest, knn = np.empty(len(y)), np.empty(len(y))
    params = table.calibration["residual"]
    for i in range(len(y)):
        nn = np.argsort(dist[i])[1:k + 1]
        knn[i] = linear[i] * np.exp(res[nn].mean())
        r = Residual(params, X=np.vstack([CX, X[nn]]), r=np.concatenate([cres, res[nn]]))
        nearest[i] = linear[i] * np.exp(r(X[i:i + 1])[0])
    return {"batch": batch, "seed": seed, "n": len(y), "noise": 100 * noise.mean(),
            "linear": _errors(linear, y), "local": _errors(local, y),
            "nearest": _errors(nearest, y), "knn": _errors(knn, y), "params": params,
            "fit_s": fit_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5, help="measured neighbours per held-out subnet")
    ap.add_argument("--out", default="residual_cpu.md")
    args = ap.parse_args()
    lines = [header("The table's local correction on held-out subnets (offline)"),
             "Offline: no timing. The committed tables and their held-out ground truth "
             "(`bench_latency.py --seed 1` and `--seed 2`, Intel host, 12-06)."]
    lines += ["", f"| batch | seed | held-out | noise floor | linear only | + local correction (calibration "
              f"samples) | + {args.k} nearest held-out measured | {args.k}-NN residual alone |",
              "|---:|---:|---:|---:|---|---|---|---|"]
    for case in CASES:
        r = run_case(*case, args.k)
        cell = [f"{m:.2f}% / {w:.1f}% / {x:.1f}%" for m, w, x in
                (r["linear"], r["local"], r["nearest"], r["knn"])]
        lines.append(f"| {r['batch']} | {r['seed']} | {r['n']} | {r['noise']:.2f}% | " + " | ".join(cell) + " |")
        print(lines[-1], r["params"], f"fit {r['fit_s']:.2f} s", flush=True)
    lines += ["", "Cells: MAPE / within 10% / max error against the faster of the two ground-truth "
              "copies. Noise floor: MAPE between the two copies."]
    print(f"wrote {write_result(args.out, chr(10).join(lines) + chr(10))}")


if __name__ == "__main__":
    main()
