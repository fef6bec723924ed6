"""``report.html`` of a ``nas run`` directory: what was found, how good, how fast, how to redo it.

Sections: the run (space, data, machine, budget), the search's Pareto plot (the
search's own ``search/pareto.png``, linked by a relative path so the directory can be
moved), the best searched subnets and the exported model beside the space's extreme
archs (and reference archs, when the space has some) with accuracy predicted by the
predictor and inherited from the supernet, latency predicted by the table and measured
on this machine, then every stage with its time and the command that reproduces it.
The numbers are also written to ``report.json``.

Example:
    >>> write_report("runs/default", config, status)  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, extreme_arch
from nas.io import write_json, write_text
from nas.mixer_registry import get_mixer

__all__ = ["arch_summary", "evaluate_rows", "render_html", "write_report"]


def arch_summary(arch: Arch) -> str:
    """One line per arch: ``d2 w48 mhsa(4h) | d3 w96 linear keep0.5``."""
    parts = []
    for s in arch.stages:
        spec = get_mixer(s.mixer)
        mixer = s.mixer + (f"/{s.pattern}" if "pattern" in spec.dims else "")
        if spec.attention:
            mixer += f"({s.heads}h)"
        extra = f" keep{s.keep_ratio:g}/{s.reduce_method}" if s.keep_ratio < 1 else ""
        parts.append(f"d{s.depth} w{s.embed_dim} {mixer} mlp{s.mlp_ratio:g}{extra}")
    return " | ".join(parts)


def _top_trials(path: Path, k: int, verified: bool = False) -> list[tuple[str, Arch, float]]:
    """The ``k`` most accurate feasible, distinct archs of a search's ``trials.csv``; when
    the search's picks were timed and the table refitted (``nas verify``), its candidates
    (``verified.csv``) instead."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if verified and (path.parent / "verified.csv").is_file():
        with (path.parent / "verified.csv").open(newline="", encoding="utf-8") as f:
            rank = {r["trial"]: int(r["rank"]) for r in csv.DictReader(f)}
        rows = sorted((r for r in rows if r["trial"] in rank), key=lambda r: rank[r["trial"]])
    else:
        rows = [r for r in rows if r.get("feasible") in ("True", "true", "1")]
        rows.sort(key=lambda r: (-float(r["acc"]), int(r["trial"])))
    out, seen = [], set()
    for r in rows:
        arch = Arch.from_dict(json.loads(r["arch"]))
        if arch not in seen:
            seen.add(arch)
            out.append((f"search trial {r['trial']}", arch, float(r["acc"])))
        if len(out) == k:
            break
    return out


def evaluate_rows(run_dir: Path, status: dict[str, Any], top_k: int,
                  say: Callable[[str], None], *, table: str | Path | None = None
                  ) -> dict[str, Any]:
    """Accuracy and latency of the best searched subnets, the export and the references,
    predicted with ``table`` (default: the profile's, ``RUN/latency/table.json``)."""
    from nas.complexity import count_params
    from nas.export import ModelConfig
    from nas.latency import LatencyTable
    from nas.latency.speedprobe import speed_verdict
    from nas.predictors import load_predictor
    from nas.search.report import reference_archs
    from nas.training import evaluate, load_run, load_run_calib_data, load_val_data

    run = load_run(run_dir / "train")
    space = run.space
    table = LatencyTable.load(table or run_dir / "latency" / "table.json", space=space)
    pred = load_predictor(run_dir / "predictor" / "model", space=space)
    x, y = load_val_data(run.config)
    calib = load_run_calib_data(run.config)

    entries = _top_trials(run_dir / "search" / "trials.csv", top_k,
                          verified=bool(status["config"].get("search", {}).get("verify")))
    timed = set(table.calibration_archs())  # the table was fitted on these: not held out
    refs = [(name + (" (calibration sample)" if arch in timed else ""), arch, None)
            for name, arch in (("largest subnet", extreme_arch(space, "max")),
                               ("smallest subnet", extreme_arch(space, "min")))]
    refs += [(f"reference {name}", arch, None) for name, arch in reference_archs(space)]
    rows = []
    for group, items in (("searched", entries), ("reference", refs)):
        for name, arch, _ in items:
            say(f"report: {name}")
            rows.append({
                "group": group, "name": name, "arch": arch.to_dict(), "summary": arch_summary(arch),
                "params": count_params(arch, num_classes=space.num_classes, in_chans=space.in_chans),
                "predicted_acc": float(pred.predict([arch])[0]),
                "inherited_acc": evaluate(run.supernet, arch, x, y, calibrate=(calib,))["acc"],
                "predicted_ms": float(table.predict([arch])[0])})
    # timed last, all together in rounds, away from the evaluations' threads, on a quiet
    # machine: the search stage's Ray workers may still be winding down (a report timed
    # beside them measured the largest subnet 57% slow)
    say("report: timing the subnets end to end")
    archs = [Arch.from_dict(r["arch"]) for r in rows]
    timing = time_rows(archs, [r["predicted_ms"] for r in rows], table, space)
    times, busy, speed = timing["ms"], timing["busy"], timing["speed"]
    shifted = timing["shifted"]
    if shifted:
        say(f"report: warning: {shifted}")
    if busy:
        say(f"report: warning: the machine was busy while timing ({busy}); measured ms are "
            "upper bounds")
    slow = speed_verdict(speed)
    if slow:
        say(f"report: warning: {slow}")
    for row, ms in zip(rows, times, strict=True):
        row["measured_ms"] = ms
    exported = None
    model_dir = run_dir / "export" / "model"
    if (model_dir / "config.json").is_file():
        mc = ModelConfig.load(model_dir)
        lat = mc.metrics.get("latency_ms", {})
        exported = {"path": "export/model", "summary": arch_summary(mc.arch),
                    "params": mc.metrics.get("params"), "val_acc": mc.metrics.get("val_acc"),
                    "inherited_acc": mc.metrics.get("inherited_acc"),
                    "predicted_ms": lat.get("predicted"), "measured_ms": lat.get("measured"),
                    "measured_plain_ms": lat.get("measured_plain"),
                    "anchors_ratio": lat.get("anchors_ratio"),
                    "files": sorted(p.name for p in model_dir.iterdir()),
                    "skipped_formats": status["stages"].get("export", {}).get("skipped_formats")}
    return {"space": space.name, "fingerprint": space.fingerprint,
            "setting": table.describe() if hasattr(table, "describe") else "", "rows": rows,
            "exported": exported, "val_images": len(y), "timing_busy": busy,
            "timing_speed": speed, "timing_slow": slow,
            "timing_anchors_ratio": timing["anchors_ratio"], "timing_shifted": shifted}


def time_rows(archs: list[Arch], predicted_ms: list[float], table: Any, space: Any
              ) -> dict[str, Any]:
    """End-to-end ms of ``archs`` with ``table``'s setting and speed check (as ``nas
    measure``), on a quiet machine, beside the table's calibration subnets nearest their
    predicted ms, timed again while those read a slower phase than the profile's
    (:mod:`nas.latency.anchors`). Returns ``ms``, ``busy`` (what the quiet wait saw, or
    None), ``speed`` (the last timing's probes), ``anchors_ratio`` (None without anchors)
    and ``shifted`` (the warning for a phase that lasted, or None)."""
    from nas.latency.anchors import nearest_anchors, shift_warning, time_with_anchors
    from nas.latency.measure import measure_archs_checked
    from nas.latency.quiet import quiet_timing
    from nas.latency.speedprobe import table_reference

    kw = table.measure_kwargs()
    seen: dict[str, Any] = {"busy": None, "speed": {}}

    def measure(some: list[Arch]) -> list[float]:
        (ms, seen["speed"]), busy = quiet_timing(
            lambda: measure_archs_checked(some, space, reference_ms=table_reference(
                table.scope, kw["batch_size"]), **kw),
            threads=kw["threads"], attempts=2, max_wait_s=10.0)
        seen["busy"] = seen["busy"] or busy
        return list(ms)

    anchors = nearest_anchors(table, float(np.median(predicted_ms)), exclude=archs)
    ms, ratio = time_with_anchors(measure, archs, [a for a, _ in anchors],
                                  [t for _, t in anchors])
    return {"ms": ms, "busy": seen["busy"], "speed": seen["speed"],
            "anchors_ratio": round(ratio, 4) if anchors else None,
            "shifted": shift_warning(ratio, "the measured ms") if anchors else None}


def _f(v: Any, digits: int = 3, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;
padding:4px 8px;text-align:right}td.l,th.l{text-align:left}th{background:#f3f3f3}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:13px}img{max-width:100%}
.note{color:#555;font-size:14px}"""


def render_html(summary: dict[str, Any], status: dict[str, Any]) -> str:
    """The HTML of the report (plain HTML and inline CSS, no scripts)."""
    e = html.escape
    cfg, stages = status["config"], status["stages"]
    search = stages.get("search", {})
    head = ["<th class=l>subnet</th><th class=l>architecture</th><th>params</th>"
            "<th>predicted acc</th><th>inherited acc</th><th>predicted ms</th>"
            "<th>measured ms</th><th>error</th>"]
    body = []
    for r in summary["rows"]:
        err = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] if r["measured_ms"] else None
        body.append(f"<tr><td class=l>{e(r['name'])}</td><td class=l><code>{e(r['summary'])}"
                    f"</code></td><td>{_f(r['params'])}</td><td>{_f(r['predicted_acc'], pct=True)}"
                    f"</td><td>{_f(r['inherited_acc'], pct=True)}</td><td>{_f(r['predicted_ms'])}"
                    f"</td><td>{_f(r['measured_ms'])}</td><td>{_f(err, pct=True)}</td></tr>")
    x = summary.get("exported")
    exported = "<p>No model was exported.</p>"
    if x:
        skipped = "".join(f"<li>{e(k)} not exported: {e(v)}</li>"
                          for k, v in (x.get("skipped_formats") or {}).items())
        exported = (
            f"<p>The best subnet, exported to <a href='{e(x['path'])}/README.md'>"
            f"<code>{e(x['path'])}</code></a> (files: {e(', '.join(x['files']))}); BatchNorm "
            f"folded and attention fused where the arch allows.</p><table><tr><th class=l>"
            "architecture</th><th>params</th><th>val acc (exported)</th><th>inherited acc</th>"
            "<th>predicted ms</th><th>measured ms (plain)</th><th>measured ms (exported)</th></tr>"
            f"<tr><td class=l><code>{e(x['summary'])}</code></td><td>{_f(x['params'])}</td>"
            f"<td>{_f(x['val_acc'], pct=True)}</td><td>{_f(x['inherited_acc'], pct=True)}</td>"
            f"<td>{_f(x['predicted_ms'])}</td><td>{_f(x['measured_plain_ms'])}</td>"
            f"<td>{_f(x['measured_ms'])}</td></tr></table>"
            + (f"<ul>{skipped}</ul>" if skipped else ""))
    stage_rows = "".join(
        f"<tr><td class=l>{e(name)}</td><td>{_f(s.get('seconds'), 0)}</td><td class=l>"
        f"<code>{e(s.get('command', ''))}</code></td></tr>"
        for name, s in stages.items() if s.get("done"))
    total = sum(s.get("seconds", 0) for s in stages.values())
    commands = "\n".join(["# all stages at once (reruns skip finished stages):",
                          status.get("command", "nas run"), "# stage by stage:"]
                         + [s["command"] for n, s in stages.items() if "command" in s
                            and n != "report"])
    busy_note = (f" <b>The machine was busy while these were timed "
                 f"({e(summary['timing_busy'])}): measured ms are upper bounds.</b>"
                 if summary.get("timing_busy") else "")
    speed = summary.get("timing_speed") or {}
    if summary.get("timing_slow"):
        busy_note += f" <b>Slow machine: {e(summary['timing_slow'])}.</b>"
    elif speed.get("slower"):
        busy_note += (f" The reference kernel ran {speed['slower']:.3f}x its speed when the "
                      f"table was profiled ({speed['clean_rounds']} of {speed['rounds']} rounds "
                      f"at full speed, over {speed['span_s']:.0f} s).")
    if summary.get("timing_shifted"):
        busy_note += f" <b>Slow phase: {e(summary['timing_shifted'])}.</b>"
    elif summary.get("timing_anchors_ratio"):
        busy_note += (f" The table's calibration subnets timed beside them read "
                      f"{summary['timing_anchors_ratio']:.3f}x their profile timing.")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>nas run: {e(summary['space'])}</title>
<style>{_CSS}</style></head><body>
<h1>Hardware-aware NAS run: <code>{e(summary['space'])}</code></h1>
<p>Search space <code>{e(summary['space'])}</code> (fingerprint <code>{e(summary['fingerprint'])}
</code>), data <code>{e(str(cfg['data']))}</code>, seed {cfg['seed']}. Latency setting:
{e(summary['setting'])}. Budget <b>{_f(search.get('budget_ms'), 4)} ms</b> (per the table),
{e(str(cfg['search']['searcher']))} search over {cfg['search']['trials']} trials. Stage time
{total / 60:.1f} min; created {e(status.get('created', ''))}, updated {e(status.get('updated', ''))}.
</p>
<h2>Accuracy vs latency</h2>
<p><img src="search/pareto.png" alt="Pareto front of the search"></p>
<p class=note>Every trial of the search (accuracy predicted, latency from the table), the
Pareto front, the budget and the best arch; the full lists are <a href="search/trials.csv">
trials.csv</a> and <a href="search/pareto.csv">pareto.csv</a>.</p>
<h2>Best subnets and references</h2>
<table><tr>{''.join(head)}</tr>{''.join(body)}</table>
<p class=note>Predicted accuracy: the accuracy predictor. Inherited accuracy: the supernet's
weights, on the {summary['val_images']} validation images. Predicted ms: the latency table;
measured ms: the plain standalone model timed the same way on this machine; error = predicted vs
measured.{busy_note}</p>
<h2>Exported model</h2>
{exported}
<h2>Stages</h2>
<table><tr><th class=l>stage</th><th>seconds</th><th class=l>command</th></tr>{stage_rows}
</table>
<h2>Reproduce</h2>
<pre>{e(commands)}</pre>
</body></html>
"""


def write_report(run_dir: str | Path, config: Any, status: dict[str, Any], *,
                 say: Callable[[str], None] = print, table: str | Path | None = None) -> Path:
    """Evaluate the report's rows and write ``report.json`` and ``report.html``; returns the
    latter. ``table``: the latency table to predict with (default: the profile's)."""
    run_dir = Path(run_dir)
    summary = evaluate_rows(run_dir, status, config.export.top_k, say, table=table)
    write_json(run_dir / "report.json", summary)
    path = run_dir / "report.html"
    write_text(path, render_html(summary, status))
    return path
