"""Re-rank a finished search's best candidates by their own training speed.

A predictor fitted on inherited-weight scores ranks subnets within a mixer family but
not the families against each other: shared weights erase what sets them apart when
each is trained alone (``bench/bench_ranking.py``; on the 30 CIFAR-10 references the
best saved predictor ranks standalone accuracy at Kendall tau 0.47). The training-speed
estimate -- minus the summed loss of the first ``steps`` standalone training steps from
the subnet's own initialisation (:mod:`nas.predictors.proxies`) -- ranks the same
references at 0.76 with 1000 steps, but costs 90-220 CPU seconds per cifar32 subnet: too slow
for every trial of a search, cheap enough for its ``top`` best. So:

1. take the ``top`` distinct archs of the search's trial log that fit its budget (and
   lie in its space), most accurate per the predictor first;
2. score each one's training speed with the training run's recipe
   (:func:`nas.predictors.collect.run_scorer`), one line per arch appended to
   ``rerank.jsonl`` as soon as it is scored, so an interrupted re-rank resumes where it
   stopped and a larger ``top`` reuses what is scored;
3. pick the fastest learner; write ``rerank.csv`` (every candidate with both ranks) and
   ``best_rerank.yaml`` (read by :func:`nas.arch.load_arch`, e.g. ``nas export --arch``).

The search's own ``best.yaml`` is left as it is.

Example:
    >>> result = rerank("runs/search", "runs/train", top=10)  # doctest: +SKIP
    >>> result.best["trial"], result.best["train_speed"]  # doctest: +SKIP
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.arch import Arch, space_contains
from nas.errors import ArtifactError, NasError
from nas.io import write_text, write_yaml
from nas.search.rundir import append_line, read_search
from nas.space import SearchSpace

__all__ = ["rerank", "candidates", "RerankResult", "RERANK_FILE"]

RERANK_FILE = "rerank.jsonl"
COLUMNS = ("rank", "predictor_rank", "trial", "acc", "latency_ms", "params", "train_speed",
           "cpu_s")


@dataclass
class RerankResult:
    """``rows``: the candidates, fastest learner first (``rank``), each with its
    ``predictor_rank``; ``best``: the first row; ``summary``: what ``nas rerank`` prints."""

    rows: list[dict[str, Any]]
    best: dict[str, Any]
    summary: str


def candidates(space: SearchSpace, records: Sequence[dict[str, Any]], budget_ms: float,
               top: int) -> list[dict[str, Any]]:
    """The ``top`` distinct archs of ``records`` within ``budget_ms`` and ``space``, most
    accurate first (the earlier trial first on ties)."""
    out, seen = [], set()
    for r in sorted(records, key=lambda r: (-r["acc"], r["trial"])):
        if len(out) >= top:
            break
        if r["latency_ms"] > budget_ms:
            continue
        arch = Arch.from_dict(r["arch"])
        if arch in seen or not space_contains(space, arch)[0]:
            continue
        seen.add(arch)
        out.append(r)
    return out


def _scored(path: Path, key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{arch json: line}`` of ``rerank.jsonl`` lines scored with ``key``'s setting (a line
    cut short by a kill is skipped)."""
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and all(rec.get(k) == v for k, v in key.items()):
                out[rec["arch"]] = rec
    return out


def rerank(search_dir: str | Path, run_dir: str | Path, *, top: int = 10, steps: int = 1000,
           echo: Callable[[str], None] | None = print, scorer: Any = None) -> RerankResult:
    """Re-rank the ``top`` best candidates of the search in ``search_dir`` by training
    speed over ``steps`` steps with the recipe of the training run ``run_dir``; see the
    module doc. ``scorer``: a ready :class:`~nas.predictors.proxies.ProxyScorer` (tests)."""
    from nas.training.rundir import read_run_config

    for name, value, low in (("top", top, 2), ("steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NasError(f"{name} must be an integer >= {low}, got {value!r}")
    say = echo or (lambda line: None)
    search_dir = Path(search_dir)
    config, space, records = read_search(search_dir)
    run_config, run_space = read_run_config(run_dir)
    if run_space.fingerprint != space.fingerprint:
        raise ArtifactError(f"run {run_dir} trained space {run_space.name} "
                            f"({run_space.fingerprint}), the search searched {space.name} "
                            f"({space.fingerprint})")
    chosen = candidates(space, records, config.budget_ms, top)
    if not chosen:
        raise NasError(f"no trial of {search_dir} fits its budget {config.budget_ms:g} ms")
    key = {"signal": "train_speed", "steps": steps, "lr": float(run_config.get("lr", 2e-3)),
           "weight_decay": float(run_config.get("weight_decay", 0.05)),
           "data": str(run_config.get("data")), "fingerprint": space.fingerprint}
    path = search_dir / RERANK_FILE
    done = _scored(path, key)
    todo = [r for r in chosen if Arch.from_dict(r["arch"]).to_json() not in done]
    say(f"rerank: {len(chosen)} candidates within {config.budget_ms:g} ms, {len(chosen) - len(todo)} "
        f"already scored; train_speed over {steps} steps each")
    if todo and scorer is None:
        from nas.predictors.collect import run_scorer

        scorer = run_scorer(run_config, space, steps)
    t0 = time.perf_counter()
    for i, r in enumerate(todo):
        arch = Arch.from_dict(r["arch"])
        c0 = time.process_time()
        value = scorer.score(arch, "train_speed")
        rec = {**key, "arch": arch.to_json(), "train_speed": value,
               "cpu_s": round(time.process_time() - c0, 2)}
        append_line(path, rec)
        done[rec["arch"]] = rec
        say(f"rerank: {i + 1}/{len(todo)} trial {r['trial']}: predicted acc {r['acc']:.4f}, "
            f"train_speed {value:.1f} ({time.perf_counter() - t0:.0f} s)")
    rows = []
    for rank, r in enumerate(chosen, 1):
        got = done[Arch.from_dict(r["arch"]).to_json()]
        rows.append({"predictor_rank": rank, "trial": r["trial"], "acc": r["acc"],
                     "latency_ms": r["latency_ms"], "params": r.get("params"),
                     "train_speed": got["train_speed"], "cpu_s": got["cpu_s"], "arch": r["arch"]})
    rows.sort(key=lambda row: (-row["train_speed"], row["predictor_rank"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    best = rows[0]
    write_text(search_dir / "rerank.csv", ",".join(COLUMNS) + "\n" + "".join(
        ",".join(str(row[c]) for c in COLUMNS) + "\n" for row in rows))
    write_yaml(search_dir / "best_rerank.yaml", {
        "space": space.name, "fingerprint": space.fingerprint, "picked_by":
        f"train_speed over {steps} steps among the {len(rows)} most accurate per the predictor",
        "trial": best["trial"], "acc": best["acc"], "latency_ms": best["latency_ms"],
        "budget_ms": config.budget_ms, "train_speed": best["train_speed"],
        "predictor_rank": best["predictor_rank"], "arch": Arch.from_dict(best["arch"]).to_dict()})
    summary = (f"rerank      {len(rows)} candidates by train_speed over {steps} steps "
               f"({sum(row['cpu_s'] for row in rows):.0f} CPU s in all)\n"
               f"best        trial {best['trial']} (predictor's #{best['predictor_rank']}): "
               f"predicted acc {best['acc']:.4f}, latency {best['latency_ms']:.4f} ms, "
               f"train_speed {best['train_speed']:.1f} -> {search_dir / 'best_rerank.yaml'}\n"
               f"predictor's trial {chosen[0]['trial']}: train_speed "
               f"{next(r['train_speed'] for r in rows if r['predictor_rank'] == 1):.1f}; "
               f"all candidates in {search_dir / 'rerank.csv'}")
    return RerankResult(rows=rows, best=best, summary=summary)
