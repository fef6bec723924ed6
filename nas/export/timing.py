"""Timing exported models, and which inference rewrites to keep on this machine.

:func:`measure_latency` times one model by the latency tables' method;
:func:`time_rounds` and :func:`measure_side_by_side` time several in interleaved rounds;
:func:`choose_rewrite_set` decides each rewrite of
:func:`nas.export.inference.optimize_for_inference` on its own paired timings; and
:func:`decide_rewrites` is what ``nas export`` and the benches run: that choice, then
the kept set timed side by side with the plain model and dropped if it is slower.

Example:
    >>> d = decide_rewrites(model, arch, {"fold_bn": True, "fuse_qkv": True,
    ...                                   "onednn_linears": True}, in_chans=3)  # doctest: +SKIP
    >>> d.flags, d.measured, d.measured_plain  # doctest: +SKIP
    ({'fold_bn': True, 'fuse_qkv': False, 'onednn_linears': False}, 1.02, 1.09)
"""
from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nas.arch import Arch
from nas.export.inference import optimize_for_inference

__all__ = ["REWRITE_MARGIN", "REWRITE_ROUNDS", "RewriteDecision", "choose_rewrite_set",
           "decide_rewrites", "measure_latency", "measure_side_by_side", "rewrite_name",
           "time_rounds"]


def measure_latency(model: torch.nn.Module, arch: Arch, *, in_chans: int,
                    device: dict[str, Any] | None = None, timing: dict[str, Any] | None = None,
                    ) -> tuple[float, str]:
    """Latency (ms) of ``model`` by the latency tables' method, and the setting in words.

    ``device`` and ``timing`` are a table's (batch size, threads, dtype; clock, statistic),
    so the figure compares with the table's prediction; by default batch 1 on CPU with
    the current thread count, median over blocks.
    """
    from nas.latency.device import DeviceSpec, describe_device, device_fingerprint
    from nas.latency.measure import Timing, time_module

    d, t = device or {}, {"stat": "median", "min_run_time": 0.3, **(timing or {})}
    if "model_min_run_time" in t:  # the table's measurement length for whole models
        t["min_run_time"] = t["model_min_run_time"]
    spec = DeviceSpec.parse("cpu", dtype=d.get("dtype", "fp32"),
                            batch_size=int(d.get("batch_size", 1)), threads=d.get("threads"))
    names = [f.name for f in dataclasses.fields(Timing)]
    tm = Timing(**{k: v for k, v in t.items() if k in names})
    x = torch.randn(spec.batch_size, in_chans, arch.resolution, arch.resolution)
    time_module(model, (x,), spec, tm)  # untimed: a CPU that was idle a moment ago runs slow
    stats = time_module(model, (x,), spec, tm)
    return float(stats[tm.stat]), (f"{describe_device(device_fingerprint(spec))}, "
                                   f"{tm.stat} over blocks, {tm.clock} clock")


def rewrite_name(flags: dict[str, bool]) -> str:
    """``fold_bn+fuse_qkv`` for the rewrites switched on in ``flags`` (``none`` for none)."""
    return "+".join(k for k, v in flags.items() if v) or "none"


REWRITE_ROUNDS = 3  # interleaved timing rounds of every rewrite combination
REWRITE_MARGIN = 0.02  # a combination must beat the plain model by this much to be kept


def choose_rewrite_set(model: torch.nn.Module, arch: Arch, allowed: dict[str, bool], *,
                       in_chans: int, device: dict[str, Any] | None = None,
                       timing: dict[str, Any] | None = None, rounds: int = REWRITE_ROUNDS,
                       margin: float = REWRITE_MARGIN, min_span_s: float | None = None,
                       ) -> tuple[dict[str, bool], dict[str, float], dict[str, float]]:
    """The inference rewrites worth applying to ``model`` on this machine.

    Every subset of the rewrites switched on in ``allowed`` (keys of
    :func:`nas.export.inference.optimize_for_inference`) is built and timed side by side
    (:func:`time_rounds`: at least ``rounds`` interleaved rounds, the order rotated from
    round to round, rounds added until they span ``min_span_s``, default the ground
    truth's 6 s). Each rewrite is then decided on its own: it is kept if, over every
    round and every pair of subsets that differ in it alone, the median of (time with
    it / time without it) is below ``1 - margin``. Pairs are timed in the same round, so
    a slow phase of the machine that spans a round cancels out, and each decision rests
    on ``rounds x 2^(n-1)`` ratios instead of one subset's luckiest round: picking the
    fastest of 8 subsets by their fastest rounds kept a copy of the plain model for
    DeiT-Tiny (fold_bn, nothing to fold: 0.92-0.98x) and dropped EfficientViT-M0's
    BatchNorm folding in 1 of 4 exports on a noisy host (1.02x timm's folded model
    instead of 0.93x). Before that, timed once each, the fastest of 8 subsets was often
    noise, and exported models measured up to 3% (batch 1) and 7% (batch 16) slower than
    the plain model side by side (``bench/bench_export.py``); 3 rounds of medians, timed
    inside one slow phase of the VM right after a search, put all 8 at 1.5-1.9 ms for a
    model that measured 1.02 ms moments later. Returns the kept flags, every subset's
    fastest round (ms) by :func:`rewrite_name` (a subset that changes nothing over a
    smaller one is timed once and listed with its time), and each tried rewrite's
    median ratio (below 1: it makes the model faster)."""
    on = [k for k, v in allowed.items() if v]
    combos = [{k: False for k in allowed} | dict(zip(on, picks))
              for picks in itertools.product((False, True), repeat=len(on))]
    models = [optimize_for_inference(model, **flags) for flags in combos]
    # A rewrite with nothing to act on (no BatchNorm to fold, no attention to fuse) leaves
    # the same model: it is timed once, under its first (smallest) subset, since timing
    # copies of one model only lets noise pick between them (DeiT-Tiny's "fold_bn",
    # which changes nothing there, measured 0.92-0.98x "none" in 3-round choices).
    first: dict[str, int] = {}
    same = [first.setdefault(repr(m), i) for i, m in enumerate(models)]
    distinct = sorted(set(same))
    table, _ = time_rounds([models[i] for i in distinct], arch, in_chans=in_chans,
                           device=device, timing=timing, rounds=max(1, int(rounds)),
                           min_span_s=min_span_s)
    col = {i: c for c, i in enumerate(distinct)}
    fastest = [min(row[col[i]] for row in table) for i in same]
    timed = {rewrite_name(flags): round(t, 4) for flags, t in zip(combos, fastest)}
    flags, effects = {k: False for k in allowed}, {}
    for k in on:  # each rewrite's effect: with / without it, all else equal, same round
        effects[k] = round(statistics.median(row[col[same[i]]] / row[col[same[j]]]
                                             for row in table for i, j in _pairs(combos, k)), 4)
        flags[k] = effects[k] < 1 - margin
    return flags, timed, effects


def _pairs(combos: list[dict[str, bool]], key: str) -> list[tuple[int, int]]:
    """Index pairs (with ``key``, without it) of combinations that agree on all else."""
    index = {tuple(sorted(c.items())): i for i, c in enumerate(combos)}
    return [(i, index[tuple(sorted({**c, key: False}.items()))])
            for i, c in enumerate(combos) if c[key]]


def measure_side_by_side(models: list[torch.nn.Module], arch: Arch | Sequence[Arch], *,
                         in_chans: int, device: dict[str, Any] | None = None,
                         timing: dict[str, Any] | None = None, rounds: int = 3,
                         min_span_s: float | None = None) -> tuple[list[float], str]:
    """Each model's fastest of interleaved rounds of :func:`measure_latency`, rounds added
    until they span ``min_span_s`` (default: the ground truth's): measured once each, an
    exported and a plain model both fell inside one burst of a shared VM's slowness and
    measured 37% over the table's prediction. ``arch``: of every model, or one per model
    (a list)."""
    table, setting = time_rounds(models, arch, in_chans=in_chans, device=device, timing=timing,
                                 rounds=rounds, min_span_s=min_span_s)
    return [min(col) for col in zip(*table)], setting


def time_rounds(models: list[torch.nn.Module], arch: Arch | Sequence[Arch], *,
                in_chans: int, device: dict[str, Any] | None = None,
                timing: dict[str, Any] | None = None, rounds: int = 3,
                min_span_s: float | None = None) -> tuple[list[list[float]], str]:
    """Every round's ms of every model (``[round][model]``), the models timed in turn in
    an order rotated from round to round, and the setting in words; see
    :func:`measure_side_by_side`."""
    from nas.latency.measure import GROUND_TRUTH_SPAN_S

    archs = list(arch) if isinstance(arch, (list, tuple)) else [arch] * len(models)
    if len(archs) != len(models):
        raise ValueError(f"{len(models)} models but {len(archs)} archs")
    span = GROUND_TRUTH_SPAN_S if min_span_s is None else min_span_s
    table: list[list[float]] = []
    setting, t0 = "", time.perf_counter()
    while len(table) < rounds or time.perf_counter() - t0 < span:
        row = [0.0] * len(models)
        for i in [(j + len(table)) % len(models) for j in range(len(models))]:
            row[i], setting = measure_latency(models[i], archs[i], in_chans=in_chans,
                                              device=device, timing=timing)
        table.append(row)
    return table, setting


@dataclass(frozen=True)
class RewriteDecision:
    """What :func:`decide_rewrites` kept and measured.

    ``flags``: the rewrites to apply; ``timed``: every subset's fastest round (ms) when
    they were chosen; ``effects``: each tried rewrite's median with / without ratio;
    ``measured`` / ``measured_plain``: the kept set and the plain model side by side
    (ms; one timing of the plain model when no rewrite is kept); ``setting``: the timing
    setting in words; ``dropped``: the set that measured slower than the plain model side
    by side and was dropped (None if none was); ``anchors_ratio``: the anchors' median
    ratio to their profile timing in the last timing (None without anchors).
    """

    flags: dict[str, bool]
    measured: float
    measured_plain: float
    setting: str
    timed: dict[str, float] = field(default_factory=dict)
    effects: dict[str, float] = field(default_factory=dict)
    dropped: str | None = None
    anchors_ratio: float | None = None


Anchor = tuple[torch.nn.Module, Arch, float]  # a calibration subnet's model, arch, profile ms


def decide_rewrites(model: torch.nn.Module, arch: Arch, allowed: dict[str, bool], *,
                    in_chans: int, device: dict[str, Any] | None = None,
                    timing: dict[str, Any] | None = None, choose: bool = True,
                    anchors: Sequence[Anchor] = ()) -> RewriteDecision:
    """The rewrites ``nas export`` applies to ``model`` on this machine: with ``choose``,
    those :func:`choose_rewrite_set` keeps of ``allowed`` (else all of ``allowed``); then
    that set and the plain model are timed side by side (:func:`measure_side_by_side`),
    and the set is dropped if it measured slower: the budget was searched for the plain
    model, so the export must not be slower than it. With no rewrite kept the exported
    model computes what the plain one does, so the plain model is timed alone and both
    figures are that one timing: two copies of one model timed side by side inside a
    slow phase of the VM read 5% apart (a `nas run` export, 1.071 vs 1.016 ms), and
    reporting that gap would call noise a slowdown.

    ``anchors``: a latency table's calibration subnets (:mod:`nas.latency.anchors`),
    timed in the same rounds as that last timing; while they read a slower phase than
    the profile's, it is timed again (:func:`~nas.latency.anchors.time_with_anchors`): a
    `nas run` export on a noisy host read its model 13% over the table's prediction."""
    from nas.latency.anchors import time_with_anchors

    flags, timed, effects = (choose_rewrite_set(model, arch, allowed, in_chans=in_chans,
                                                device=device, timing=timing)
                             if choose else (dict(allowed), {}, {}))
    kept = any(flags.values())
    items = [(optimize_for_inference(model, **flags), arch), (model, arch)] if kept else \
        [(model, arch)]
    said = [""]

    def measure(pairs: list[tuple[torch.nn.Module, Arch]]) -> list[float]:
        times, said[0] = measure_side_by_side([m for m, _ in pairs], [a for _, a in pairs],
                                              in_chans=in_chans, device=device, timing=timing)
        return times

    times, ratio = time_with_anchors(measure, items, [(m, a) for m, a, _ in anchors],
                                     [ms for _, _, ms in anchors])
    fast, plain = (times[0], times[1]) if kept else (times[0], times[0])
    dropped = None
    if kept and fast > plain:
        dropped, flags, fast = rewrite_name(flags), {k: False for k in flags}, plain
    return RewriteDecision(flags=flags, measured=fast, measured_plain=plain, setting=said[0],
                           timed=timed, effects=effects, dropped=dropped,
                           anchors_ratio=round(ratio, 4) if anchors else None)
