"""The analysis tables of the ranking bench (``bench/bench_ranking.py``): Kendall tau
with bootstrap intervals overall, within and across stage-0 mixer families, per search
dimension, per family, the seed noise ceiling, and one-change-from-the-largest probes.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.stats import kendalltau

from nas.arch import Arch, canonicalize, extreme_arch
from nas.complexity import count_params
from nas.errors import ArchError
from nas.training import evaluate


def family_split_tau(archs: list[Arch], a: list[float], b: list[float]) -> tuple[float, float]:
    """Kendall tau (tau-a over untied pairs) of ``a`` vs ``b`` over pairs of archs with the
    same stage-0 mixer, and over pairs with different ones: is the disagreement only the
    mixer family's offset?"""
    score = {True: [0, 0], False: [0, 0]}
    for i in range(len(archs)):
        for j in range(i + 1, len(archs)):
            s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
            if s:
                score[archs[i].stages[0].mixer == archs[j].stages[0].mixer][int(s < 0)] += 1
    return tuple((c - d) / max(c + d, 1) for c, d in (score[True], score[False]))


def arch_features(space, archs: list[Arch]) -> dict[str, list[float]]:
    """Per-arch values of the dimensions that move the rankings (for ``dimension_table``)."""
    feats: dict[str, list[float]] = {}
    for i, ss in enumerate(space.stages):
        local = [m for m in ss.mixer if m in ("pool", "dwconv")]
        if local and len(local) < len(ss.mixer):
            feats[f"stage {i} mixer is {'/'.join(local)}"] = [
                float(a.stages[i].mixer in local) for a in archs]
        for name in ("embed_dim", "depth", "mlp_ratio", "low_rank", "keep_ratio"):
            if len(ss.choices(name)) > 1:
                feats[f"stage {i} {name}"] = [float(getattr(a.stages[i], name)) for a in archs]
        if "prune" in ss.reduce_method and min(ss.keep_ratio) < 1:
            feats[f"stage {i} tokens pruned"] = [
                float(a.stages[i].keep_ratio < 1 and a.stages[i].reduce_method == "prune")
                for a in archs]
    feats["params"] = [float(count_params(a, num_classes=space.num_classes)) for a in archs]
    return feats


def dimension_table(space, archs: list[Arch], rankings: dict[str, list[float]]) -> str:
    """Kendall tau of each dimension with each loss ranking: > 0, a larger value means a
    higher loss. A row where inherited and scratch differ is a dimension that weight
    sharing (or the budget) rates differently."""
    head = " | ".join(rankings)
    out = ["", "## What each ranking depends on", "",
           "Kendall tau between a dimension's value and the val loss (> 0: larger value, higher "
           "loss):", "", f"| dimension | {head} |", "|---|" + "---:|" * len(rankings)]
    for name, values in arch_features(space, archs).items():
        cells = " | ".join(f"{kendalltau(values, loss).statistic:+.2f}"
                           for loss in rankings.values())
        out.append(f"| {name} | {cells} |")
    return "\n".join(out) + "\n"


def family_table(space, archs: list[Arch], inh: list[float], refit: list[float],
                 scratch: np.ndarray) -> str:
    """How much of the scratch ranking one bit (a stage's mixer family) explains, and how
    well inherited weights rank inside each family, against each family's own noise ceiling.
    ``scratch`` is (subnets, seeds)."""
    mean = scratch.mean(1)
    out = []
    for name, bit in arch_features(space, archs).items():
        if " mixer is " not in name:
            continue
        bit = np.array(bit, bool)
        alone = abs(kendalltau(bit.astype(float), mean).statistic)
        out.append(f"Ranking by `{name}` alone (the family with the lower scratch loss first, "
                   f"ties inside): **tau {alone:.3f}** against scratch; the two-seed noise "
                   f"ceiling is {seed_tau(scratch):.3f}.\n")
        out.append("| subnets | n | inherited | refit | noise ceiling (two seeds) |")
        out.append("|---|---:|---:|---:|---:|")
        for label, m in ((name, bit), (name.replace(" is ", " is not "), ~bit)):
            if m.sum() < 4:
                continue
            cells = [kendalltau(np.asarray(v)[m], mean[m]).statistic for v in (inh, refit)]
            out.append(f"| {label} | {m.sum()} | {cells[0]:.3f} | {cells[1]:.3f} | "
                       f"{seed_tau(scratch[m]):.3f} |")
        out.append("")
    if not out:
        return ""
    return ("\n## What one mixer family bit explains\n\n" + "\n".join(out))


def one_change_table(run, x, y) -> str:
    """Inherited accuracy of the largest subnet with one dimension changed: where sharing
    hurts (a diagnostic for the weight-sharing rules, not part of the target)."""
    big = extreme_arch(run.space, "max")

    def change(i: int, **kw) -> Arch:
        st = list(big.stages)
        st[i] = dataclasses.replace(st[i], **kw)
        return canonicalize(run.space, dataclasses.replace(big, stages=tuple(st)))

    cases = {"largest": big, "smallest": extreme_arch(run.space, "min")}
    for i, ss in enumerate(run.space.stages):
        for name in ("heads", "qk_ratio", "mlp_ratio", "low_rank", "depth", "embed_dim"):
            low = min(ss.choices(name))
            if low != getattr(big.stages[i], name):
                cases[f"stage {i}: {name} = {low}"] = (i, {name: low})
        for m in ss.mixer:
            if m != big.stages[i].mixer:
                mixers = tuple(m if j == i else s.mixer for j, s in enumerate(big.stages))
                cases[f"stage {i}: mixer = {m}"] = extreme_arch(run.space, "max", mixers)
        for k in ss.keep_ratio:
            for method in ss.reduce_method if k < 1 else ():
                cases[f"stage {i}: {method} to {k}"] = (i, {"keep_ratio": k, "reduce_method": method})
    out = ["", "## One change from the largest subnet (inherited weights)", "",
           "| subnet | val acc | val loss |", "|---|---:|---:|"]
    for name, spec in cases.items():
        try:
            arch = spec if isinstance(spec, Arch) else change(spec[0], **spec[1])
        except (ArchError, ValueError):
            continue
        r = evaluate(run.supernet, arch, x, y)
        out.append(f"| {name} | {100 * r['acc']:.2f}% | {r['loss']:.4f} |")
    return "\n".join(out) + "\n"


def seed_tau(loss: np.ndarray) -> float:
    """Kendall tau between the first two scratch seeds of ``loss`` (subnets, seeds); nan
    with one seed."""
    return kendalltau(loss[:, 0], loss[:, 1]).statistic if loss.shape[1] > 1 else float("nan")


def noise_ceiling(loss: np.ndarray) -> str:
    """Kendall tau between scratch seeds: two seeds, and one seed vs the mean of the rest."""
    if loss.shape[1] < 2:
        return "n/a (1 seed)"
    pair = seed_tau(loss)
    rest = np.mean([kendalltau(loss[:, k], np.delete(loss, k, axis=1).mean(1)).statistic
                    for k in range(loss.shape[1])])
    return f"{pair:.3f} / {rest:.3f}"


def tau_cells(archs: list[Arch], score, ref, *, boots: int = 1000, seed: int = 0) -> list[str]:
    """Kendall tau of ``score`` with ``ref`` overall, over pairs with the same stage-0 mixer
    and over pairs with different ones, each with a bootstrap 90% interval (subnets
    resampled with replacement)."""
    score, ref = np.asarray(score, float), np.asarray(ref, float)

    def stats(idx: np.ndarray) -> tuple[float, float, float]:
        return (kendalltau(score[idx], ref[idx]).statistic,
                *family_split_tau([archs[i] for i in idx], score[idx].tolist(), ref[idx].tolist()))

    n = len(archs)
    point = stats(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = np.array([stats(rng.integers(0, n, n)) for _ in range(boots)])
    lo, hi = np.nanpercentile(draws, [5, 95], axis=0)
    return [f"{p:.3f} [{a:.2f}, {b:.2f}]" for p, a, b in zip(point, lo, hi)]


def summary_table(archs: list[Arch], rankings: dict[str, list[float]], scratch: np.ndarray,
                  costs: dict[str, float]) -> str:
    """One row per ranking: tau with the standalone loss (mean of seeds), overall, within and
    across stage-0 mixer families, bootstrap 90% intervals; the seeds' own agreement last."""
    mean = scratch.mean(1)
    out = ["| ranking vs standalone val loss | tau, all | same stage-0 mixer | different "
           "stage-0 mixers | CPU s per arch |", "|---|---:|---:|---:|---:|"]
    for name, score in rankings.items():
        cost = f"{costs[name]:.2f}" if name in costs else ""
        out.append(f"| {name} | " + " | ".join(tau_cells(archs, score, mean)) + f" | {cost} |")
    if scratch.shape[1] > 1:
        out.append("| noise ceiling: standalone seed 1 vs seed 2 | "
                   + " | ".join(tau_cells(archs, scratch[:, 0], scratch[:, 1])) + " | |")
    return "\n".join(out) + "\n"
