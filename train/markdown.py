"""A combined evaluation (``glimpse evaluate --combine``) as the Markdown table the docs use.

Written next to ``results.json`` as ``results.md``: the test error at T = 1, 2, 4, 6, 8, 12
as mean ± standard deviation over the seeds (a row without spread at that precision, such
as one that only reads the BagNet, as its value), coverage and the occlusion drops at the
occlusion T, then each policy's difference from the reference with its 95 % interval.
"""

from __future__ import annotations

from typing import Any

COLUMNS = (1, 2, 4, 6, 8, 12)


def _get(per_t: dict[Any, Any], t: int) -> Any:
    """``per_t[t]`` with int keys (in memory) or string keys (read back from JSON)."""
    return per_t.get(t, per_t.get(str(t)))


def _value(s: dict[str, Any] | None, scale: float = 100.0, digits: int = 2) -> str:
    if not s:
        return ""
    mean, std = f"{scale * s['mean']:.{digits}f}", f"{scale * s['std']:.{digits}f}"
    return mean if s["n"] < 2 or float(std) == 0 else f"{mean} ± {std}"


def combined_markdown(results: dict[str, Any], columns: tuple[int, ...] = COLUMNS) -> str:
    """The Markdown table and difference list of a combined ``results.json``."""
    table, t_ref = results["policies"], int(results["T"])
    some = next(iter(table.values()))
    cols = [t for t in columns if _get(some["error"], t) is not None]
    seeds = max(row["seeds"] for row in table.values())
    head = " | ".join(str(t) for t in cols)
    lines = [f"| test error (%) at T = | {head} | coverage (T = {t_ref}) | occlusion drop "
             f"(T = {t_ref}) | random cells' drop |",
             "|---" * (len(cols) + 4) + "|"]
    for name, row in table.items():
        errors = " | ".join(_value(_get(row["error"], t)) for t in cols)
        occlusion = row.get("occlusion", {})
        lines.append(f"| {name} | {errors} | {_value(_get(row['coverage'], t_ref), 1, 3)} | "
                     f"{_value(occlusion.get('drop_policy'))} | "
                     f"{_value(occlusion.get('drop_random'))} |")
    diffs = _get(results["differences"], t_ref) or {}
    pairs = [f"{pair} {100 * d['mean']:+.2f} [{100 * d['ci95'][0]:+.2f}, "
             f"{100 * d['ci95'][1]:+.2f}]{'' if d['differs'] else ' (no difference shown)'}"
             for pair, d in diffs.items()]
    over = "one seed" if seeds == 1 else f"mean ± std over up to {seeds} seeds"
    lines += ["", f"{results['num_images']:,} test images, {over}. Differences at T = "
              f"{t_ref} in points, with the 95 % bootstrap interval of the difference of the "
              "means: " + "; ".join(pairs) + "."]
    return "\n".join(lines) + "\n"


__all__ = ["combined_markdown"]
