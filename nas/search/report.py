"""Outputs of a search run dir: trials and Pareto CSVs, the Pareto plot, the best arch.

* ``trials.csv`` -- every evaluated arch (arch JSON, acc, latency, params, feasible...);
* ``pareto.csv`` -- the accuracy/latency Pareto front of all trials;
* ``pareto.png`` -- accuracy vs latency: trials, front, budget line, best arch and the
  reference archs of ``search_spaces/reference/`` whose ``space:`` is this space
  (scored by the same objective);
* ``best.yaml`` -- the most accurate feasible arch (:func:`nas.arch.load_arch` reads it).

The best arch is checked twice before it is written: it must lie in the space
(:func:`nas.arch.space_contains`) and the objective's latency table must put it
within the budget.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, load_arch, space_contains
from nas.io import read_yaml, write_text, write_yaml
from nas.search.pareto import pareto_front
from nas.space import SearchSpace

__all__ = ["best_feasible", "write_outputs", "reference_archs", "format_table"]

_FIRST = ("trial", "acc", "latency_ms", "params", "feasible")
_LAST = ("op", "tries", "over_budget", "attempt", "arch")



def best_feasible(space: SearchSpace, records: Sequence[dict[str, Any]], budget_ms: float
                  ) -> dict[str, Any] | None:
    """The most accurate record within budget whose arch lies in the space (first on ties)."""
    feasible = [r for r in records if r["latency_ms"] <= budget_ms]
    for r in sorted(feasible, key=lambda r: (-r["acc"], r["trial"])):
        if space_contains(space, Arch.from_dict(r["arch"]))[0]:
            return r
    return None


def check_best(space: SearchSpace, best: dict[str, Any], latency_ms: float, budget_ms: float) -> Arch:
    """Assert the invariants of a reported best arch; return it."""
    arch = Arch.from_dict(best["arch"])
    ok, reason = space_contains(space, arch)
    assert ok, f"best arch of trial {best['trial']} is outside the space: {reason}"
    assert latency_ms <= budget_ms, (f"best arch of trial {best['trial']} takes {latency_ms} ms "
                                     f"on the table, over the budget {budget_ms} ms")
    assert abs(latency_ms - best["latency_ms"]) <= 1e-6 * max(1.0, latency_ms), \
        "the trial's latency disagrees with the table"
    return arch


def reference_archs(space: SearchSpace, directory: Path | None = None) -> list[tuple[str, Arch]]:
    """``(name, arch)`` of the reference archs declared for ``space`` (by name) and inside it
    (``directory``: the shipped ``reference/`` folder by default)."""
    if directory is None:
        from nas.search_spaces import shipped_dir

        directory = shipped_dir() / "reference"
    out = []
    for path in sorted(directory.glob("*.yaml")):
        raw = read_yaml(path, what="reference arch")
        if not isinstance(raw, dict) or raw.get("space") != space.name:
            continue
        arch = load_arch(path)
        if space_contains(space, arch)[0]:
            out.append((path.stem, arch))
    return out


def _columns(records: Sequence[dict[str, Any]]) -> list[str]:
    extra = sorted({k for r in records for k in r if k not in _FIRST + _LAST + ("meta",)})
    return list(_FIRST) + extra + list(_LAST)


def _row(r: dict[str, Any], cols: list[str]) -> list[Any]:
    flat = dict(r)
    meta = r.get("meta") or {}
    for key in ("op", "tries", "over_budget"):
        flat[key] = meta.get(key, "")
    flat["arch"] = json.dumps(r["arch"], separators=(",", ":"))
    return [flat.get(c, "") for c in cols]


def _csv(records: Sequence[dict[str, Any]], cols: list[str], first: tuple[str, ...] = ()) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(first) + cols)
    for i, r in enumerate(records):
        w.writerow(([i] if first else []) + _row(r, cols))
    return buf.getvalue()


def format_table(rows: Sequence[dict[str, Any]], *, limit: int = 15) -> str:
    """A plain-text table of trial records (rank, trial, acc, latency, params, feasible, op)."""
    lines = [f"{'#':>3} {'trial':>6} {'acc':>8} {'latency_ms':>11} {'params':>10} "
             f"{'feasible':>8}  op"]
    for i, r in enumerate(rows[:limit]):
        op = (r.get("meta") or {}).get("op", "")
        lines.append(f"{i:>3} {r['trial']:>6} {r['acc']:>8.4f} {r['latency_ms']:>11.4f} "
                     f"{int(r['params']):>10,} {'yes' if r['feasible'] else 'no':>8}  {op}")
    if len(rows) > limit:
        lines.append(f"    ... {len(rows) - limit} more")
    return "\n".join(lines)


def write_outputs(out: Path, space: SearchSpace, records: Sequence[dict[str, Any]], *,
                  budget_ms: float, searcher: str, best: dict[str, Any] | None,
                  references: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Write ``trials.csv``, ``pareto.csv``, ``pareto.png`` and ``best.yaml``; return the front."""
    cols = _columns(records)
    write_text(out / "trials.csv", _csv(records, cols))
    acc = np.array([r["acc"] for r in records], dtype=np.float64)
    lat = np.array([r["latency_ms"] for r in records], dtype=np.float64)
    front = [records[i] for i in pareto_front(acc, lat)] if records else []
    write_text(out / "pareto.csv", _csv(front, cols, first=("rank",)))
    if best is not None:
        write_yaml(out / "best.yaml", {
            "space": space.name, "fingerprint": space.fingerprint, "searcher": searcher,
            "trial": best["trial"], "acc": best["acc"], "latency_ms": best["latency_ms"],
            "budget_ms": budget_ms, "params": best["params"],
            "arch": Arch.from_dict(best["arch"]).to_dict()})
    elif (out / "best.yaml").exists():
        (out / "best.yaml").unlink()
    _plot(out / "pareto.png", records, front, best=best, budget_ms=budget_ms,
          references=references, title=f"{searcher} on {space.name}")
    return front


def _plot(path: Path, records, front, *, best, budget_ms, references, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ok = [r for r in records if r["feasible"]]
    bad = [r for r in records if not r["feasible"]]
    ax.scatter([r["latency_ms"] for r in ok], [r["acc"] for r in ok], s=8, c="tab:blue",
               alpha=0.35, lw=0, label=f"feasible trials ({len(ok)})")
    if bad:
        ax.scatter([r["latency_ms"] for r in bad], [r["acc"] for r in bad], s=8, c="tab:red",
                   alpha=0.35, lw=0, label=f"over budget ({len(bad)})")
    if front:
        ax.step([r["latency_ms"] for r in front], [r["acc"] for r in front], where="post",
                c="k", lw=1.2, label="Pareto front")
    ax.axvline(budget_ms, c="tab:orange", ls="--", lw=1.2, label=f"budget {budget_ms:g} ms")
    if best is not None:
        ax.scatter([best["latency_ms"]], [best["acc"]], marker="*", s=180, c="gold",
                   edgecolors="k", zorder=5, label=f"best (trial {best['trial']})")
    for name, row in references:
        ax.scatter([row["latency_ms"]], [row["acc"]], marker="D", s=40, c="tab:green",
                   edgecolors="k", zorder=4)
        ax.annotate(name, (row["latency_ms"], row["acc"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    lats = [r["latency_ms"] for r in records] + [row["latency_ms"] for _, row in references]
    if lats and min(lats) > 0 and max(lats) / min(lats) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title(title + (f"; references: {len(references)}" if references else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
