"""Results over seeds: the mean, its spread, a bootstrap interval, and which differences hold.

One training seed gives one number per policy; the same recipe run with another seed can
land a few tenths of a point away. These helpers turn the numbers of several seeds into a
mean with its standard deviation and a 95 % percentile-bootstrap interval of the mean, and
call two policies different only where the bootstrap interval of the difference of their
means excludes 0. With 3 seeds the interval is close to the range of the seeds' values: it
is a guard against reading noise as a result, not a significance test.

>>> s = summary([0.010, 0.012, 0.011])
>>> round(s["mean"], 4), round(s["std"], 4), s["n"]
(0.011, 0.001, 3)
>>> difference([0.010, 0.011, 0.012], [0.020, 0.021, 0.019])["differs"]
True
>>> difference([0.010, 0.013, 0.011], [0.012, 0.010, 0.014])["differs"]
False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 10_000
"""Bootstrap resamples per interval."""
LEVEL = 0.95
"""Coverage of the intervals."""


def _resampled_means(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[RESAMPLES]`` means of ``values`` resampled with replacement."""
    picks = rng.integers(0, len(values), (RESAMPLES, len(values)))
    return values[picks].mean(axis=1)


def _interval(samples: np.ndarray) -> list[float]:
    tail = (1 - LEVEL) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail])
    return [float(lo), float(hi)]


def summary(values: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), range and the 95 % bootstrap
    interval of the mean of one number over seeds."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"need a non-empty list of numbers, got {values!r}")
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "min": float(v.min()), "max": float(v.max()),
            "n": int(len(v)), "ci95": _interval(_resampled_means(v, np.random.default_rng(seed))),
            "values": [float(x) for x in v]}


def difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """``mean(a) - mean(b)`` with the 95 % bootstrap interval of that difference (seeds of
    ``a`` and ``b`` resampled independently); ``differs`` when the interval excludes 0 and
    at least one side has two seeds or more (one value against one value has no spread to
    resample: its interval is the point, which says nothing of another seed).

    >>> difference([0.010], [0.012])["differs"], difference([0.010, 0.011], [0.02])["differs"]
    (False, True)
    """
    rng = np.random.default_rng(seed)
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    lo, hi = _interval(_resampled_means(va, rng) - _resampled_means(vb, rng))
    return {"mean": float(va.mean() - vb.mean()), "ci95": [lo, hi],
            "differs": bool((lo > 0 or hi < 0) and max(len(va), len(vb)) > 1)}


def paired_difference(a_correct: Sequence[bool], b_correct: Sequence[bool],
                      seed: int = 0) -> dict[str, Any]:
    """Error of model ``a`` minus error of model ``b`` on the same test items, with the 95 %
    bootstrap interval over items (both models' outcomes on an item resampled together);
    ``differs`` when the interval excludes 0. This is the test set's sampling noise only:
    it says nothing of how much another training seed would move either model.

    >>> a = [True] * 990 + [False] * 10
    >>> paired_difference(a, a)["differs"], paired_difference(a, [True] * 1000)["mean"]
    (False, 0.01)
    """
    va = np.asarray(a_correct, dtype=bool)
    vb = np.asarray(b_correct, dtype=bool)
    if va.shape != vb.shape or va.ndim != 1 or len(va) == 0:
        raise ValueError(f"need two outcome lists of the same non-zero length, got "
                         f"{va.shape} and {vb.shape}")
    n = len(va)
    # per item, error(a) - error(b) is -1, 0 or +1: a resample of the items is a multinomial
    # draw of those three counts (the same bootstrap, without an [RESAMPLES, n] index array)
    counts = [int((va & ~vb).sum()), int((va == vb).sum()), int((~va & vb).sum())]
    draws = np.random.default_rng(seed).multinomial(n, np.asarray(counts) / n, size=RESAMPLES)
    lo, hi = _interval((draws[:, 2] - draws[:, 0]) / n)
    return {"mean": (counts[2] - counts[0]) / n, "ci95": [lo, hi],
            "differs": bool(lo > 0 or hi < 0), "n": n}


def combine_results(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per policy and metric, the :func:`summary` over runs (one ``glimpse evaluate``
    ``results.json`` per seed): ``error`` and ``coverage`` at every T, and the occlusion
    drops. A policy missing from some runs is summarised over the runs that have it.

    Returns:
        ``{policy: {"error": {T: summary}, "coverage": {T: summary}, "occlusion":
        {"drop_policy": summary, "drop_random": summary} (when measured), "seeds": n}}``
    """
    names: list[str] = []
    for run in runs:
        names += [n for n in run["policies"] if n not in names]
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [run["policies"][name] for run in runs if name in run["policies"]]
        entry: dict[str, Any] = {"seeds": len(rows)}
        for metric in ("error", "coverage"):
            ts = sorted({int(t) for t in rows[0][metric]})
            entry[metric] = {t: summary([_at(r[metric], t) for r in rows]) for t in ts}
        occ = [r["occlusion"] for r in rows if r.get("occlusion")]
        if len(occ) == len(rows):
            entry["occlusion"] = {k: summary([o[k] for o in occ])
                                  for k in ("drop_policy", "drop_random")}
        table[name] = entry
    return table


def _at(per_t: dict[Any, float], t: int) -> float:
    """``per_t[t]`` whether the keys are ints (in memory) or strings (read from JSON)."""
    return float(per_t[t] if t in per_t else per_t[str(t)])


def differences(table: dict[str, dict[str, Any]],
                reference: str | None = None) -> dict[int, dict[str, dict[str, Any]]]:
    """:func:`difference` of the error of every policy against ``reference`` (default: the
    first policy of ``table``) at every T the reference has: ``{T: {"POLICY - REFERENCE":
    difference}}``."""
    ref = reference or next(iter(table))
    return {t: {f"{name} - {ref}": difference(row["error"][t]["values"], base["values"])
                for name, row in table.items() if name != ref and t in row["error"]}
            for t, base in table[ref]["error"].items()}


__all__ = ["LEVEL", "RESAMPLES", "combine_results", "difference", "differences", "summary"]
