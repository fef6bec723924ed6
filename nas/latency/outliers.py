"""Table entries that read slower than their neighbours predict, to time them again.

A profile keeps each entry's fastest round, and the reference kernel
(:mod:`nas.latency.slowphase`) catches slow phases it feels. On the Intel host of this
project neither was enough at batch 8: a component could run 1.3-1.9x slower for seconds
to minutes while the kernel read normal (slow phases hit cache-bound ops and GEMMs
differently), so every round of an entry could land in one. Four batch-8 tables of
tiny32 built on the same machine held 20-62 entries each (of 876) more than 15% above
the median of the other three, and one such entry put a held-out subnet 35% off.

Each entry is one point of a smooth family (a block's time grows with its width, its
MLP ratio, its tokens...), so an entry can be checked against the others: an
extremely randomized trees regressor of ``log(ms)`` on the signature's parameters,
fitted out of fold, predicts each entry from the rest. On those four tables the 10% of
entries it put furthest above its prediction held 74-100% of the inflated ones.
:func:`suspects` returns them; :func:`nas.latency.profile.profile_space` times them
again (keeping the fastest, so an entry that was right only costs time).

Example:
    >>> suspects(table, sigs)  # doctest: +SKIP
    ['block:{"act":"gelu",...}', ...]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.latency.signatures import Signature

__all__ = ["suspects", "signature_features", "SHARE", "MIN_EXCESS", "MIN_ENTRIES", "PASSES"]

SHARE = 0.1  # at most this share of the entries is timed again per pass
MIN_EXCESS = 0.05  # ... and only those more than 5% above their prediction
MIN_ENTRIES = 60  # fewer entries than this: too few neighbours to predict from
PASSES = 2  # suspect passes after the rounds (each re-fits on the updated entries)
FOLDS = 5


def _items(sig: Signature) -> dict[str, float]:
    out = {f"kind={sig.kind}": 1.0}
    for name, v in sig.params:
        if isinstance(v, bool):
            out[name] = float(v)
        elif isinstance(v, (int, float)):
            out[name] = float(v)
            out[f"log_{name}"] = math.log1p(max(float(v), 0.0))
        elif isinstance(v, tuple):
            out[f"{name}_prod"] = float(np.prod(v)) if v else 0.0
        elif v is None:
            out[f"{name}=none"] = 1.0
        else:
            out[f"{name}={v}"] = 1.0
    return out


def signature_features(sigs: Sequence[Signature]) -> np.ndarray:
    """One row per signature: kind and categorical parameters one-hot, numbers as value
    and log, tuples (grids) as their product; a name a signature lacks reads 0."""
    rows = [_items(s) for s in sigs]
    names = sorted(set().union(*rows)) if rows else []
    return np.array([[r.get(n, 0.0) for n in names] for r in rows], dtype=np.float64)


def residuals(ms: Sequence[float], sigs: Sequence[Signature], seed: int = 0) -> np.ndarray:
    """``log(ms)`` minus its out-of-fold prediction from the other entries (positive: the
    entry reads slower than its neighbours predict)."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    y = np.log(np.asarray(ms, dtype=np.float64))
    model = ExtraTreesRegressor(n_estimators=100, random_state=seed, n_jobs=1)
    pred = cross_val_predict(model, signature_features(sigs), y,
                             cv=KFold(FOLDS, shuffle=True, random_state=seed))
    return y - pred


def suspects(table: Any, sigs: Sequence[Signature], *, share: float = SHARE,
             min_excess: float = MIN_EXCESS, seed: int = 0) -> list[str]:
    """Keys of the entries of ``sigs`` in ``table`` that read most above what the other
    entries predict: at most ``share`` of them, each more than ``min_excess`` above,
    furthest first. Empty with fewer than :data:`MIN_ENTRIES` measured entries."""
    timed = [g for g in sigs if g in table]
    if len(timed) < MIN_ENTRIES:
        return []
    res = residuals([table.lookup(g) for g in timed], timed, seed=seed)
    order = np.argsort(-res)[:max(1, int(share * len(timed)))]
    return [timed[i].key for i in order if res[i] > math.log1p(min_excess)]
