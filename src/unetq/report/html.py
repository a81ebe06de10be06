"""The run's report: one self-contained HTML file (figures embedded) built from the CSVs on disk."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from unetq.errors import UnetqError
from unetq.fileio import write_text
from unetq.recommend import Budgets, recommend, summary_lines
from unetq.report import figures
from unetq.report.tables import (
    factor_effects,
    guard_table,
    load_tables,
    main_table,
    quantization_penalties,
    sensitivity_table,
)
from unetq.runfolder import RunFolder, read_csv, read_json

SEED_METRIC_WHY = (
    "The original study scored the wrong class: its prediction was <code>argmax &gt; 1</code> "
    "(the border class only) and its ground truth, the trimap divided by its maximum and cast "
    "to uint8, kept only the border pixels, so its IoU/Dice measure border agreement, not the "
    "pet; <code>fg_iou</code>/<code>fg_dice</code> score pet and border against background."
)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f7f8fa;line-height:1.45}
main{max-width:1180px;margin:auto;padding:12px 16px 48px}
h1{font-size:1.6rem;margin:.6em 0 .2em}h2{font-size:1.2rem;margin-top:1.8em;
border-bottom:1px solid #d9dde5;padding-bottom:.2em}
.banner{background:#fff3cd;border:1px solid #e0c46c;padding:.6em .9em;border-radius:6px;
font-weight:600}
.note{color:#4a5263;font-size:.92rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;background:#fff;border-radius:6px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;font-size:.86rem;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}
th{background:#eef1f6;position:sticky;top:0;cursor:pointer;user-select:none}
td:first-child,th:first-child,td.text{text-align:left}
tr:hover td{background:#f4f7fc}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
img{max-width:100%;height:auto;background:#fff;border-radius:6px}
pre{background:#fff;padding:10px;border-radius:6px;overflow-x:auto;font-size:.8rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        return asc ? cmp : -cmp;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def build_report(run_dir: Path) -> Path:
    """Rebuild runs/<study>/report/index.html from the files on disk; recomputes nothing."""
    run = RunFolder(run_dir)
    tables = load_tables(run.root)
    table = main_table(tables.average)
    dataset = read_json(run.dataset)
    machine = read_json(run.machine)
    config_text = _read_text(run.config)
    title = f"unetq study: {html.escape(run.root.name)}"

    parts = [f"<h1>{title}</h1>"]
    if dataset.get("synthetic"):
        parts.append(
            '<p class="banner">SYNTHETIC DATA: these numbers come from the built-in synthetic '
            f"dataset, not real images. {html.escape(dataset.get('note', ''))}</p>"
        )
    parts.append(_dataset_line(dataset))
    parts.append(_recommendation(run.root))
    parts.append("<h2>Main table</h2>")
    parts.append(
        '<p class="note">One row per model, variant and runtime. Accuracy on the test split at '
        "the model's input resolution; latency is the median of timed model calls after warm-up "
        "(ms_1t: one thread, ms_Nt: N threads); x_keras_Nt is keras' time over this one's, "
        "taken round by round as the measurements took turns, then the median of the rounds "
        "(a slowdown of the whole machine that hits both alike cancels out of it); memory is "
        "the peak resident set of a fresh process minus its size after imports. Click a column "
        "to sort.</p>"
    )
    parts.append(_html_table(table, sortable=True))
    parts.append(_slow_variant_note(tables.average))

    parts.append("<h2>Accuracy against latency</h2><div class='grid'>")
    for col in [c for c in table.columns if c.startswith("ms_")]:
        parts.append(_figure(figures.accuracy_vs_latency(table, col), f"fg IoU vs {col}"))
    parts.append("</div>")
    parts.append("<h2>Size and memory per variant</h2>")
    parts.append(_figure(figures.size_and_memory(table), "size and memory"))

    guards = guard_table(run.root, tables.average)
    if not guards.empty:
        parts.append("<h2>Accuracy-guarded variants</h2>")
        parts.append(
            '<p class="note">tflite-int8-mixed keeps the layers most sensitive to quantization '
            "in float (ranked by the TFLite quantization debugger's RMSE / scale) until the "
            "validation fg IoU is within the budget of the float model's; openvino-int8-guarded "
            "lets NNCF's accuracy control return operations to float for the same budget. "
            "cost_ms: its median at one thread minus that of the plain int8 variant it is "
            "compared with (versus).</p>"
        )
        parts.append(_html_table(guards, sortable=True))
        best = _best_model(tables.average)
        layers = sensitivity_table(run.root, best) if best else pd.DataFrame()
        if not layers.empty:
            parts.append(f"<p class='note'>Most sensitive layers of {html.escape(best)}:</p>")
            parts.append(_html_table(layers, sortable=True))

    parts.append("<h2>Effect of each factor</h2>")
    parts.append(
        '<p class="note">Mean paired change when one factor changes and all others stay equal '
        "(one thread), with a 95% bootstrap interval over the pairs. Computed from the data; "
        "an interval that straddles 0 means no clear effect.</p>"
    )
    parts.append(_html_table(factor_effects(tables.average), sortable=True))

    parts.append("<h2>Training</h2>")
    parts.append(_figure(figures.training_curves(run.root), "training curves"))
    parts.append(_html_table(_trained_view(tables.trained), sortable=True))
    parts.append("<h2>Compression check against the float model</h2>")
    parts.append(_html_table(tables.compressed, sortable=True))

    parts.append("<h2>One image, every variant</h2>")
    panel = run.panel
    if panel.exists():
        parts.append(_figure(panel.read_bytes(), "single-image panel"))
        parts.append(
            '<p class="note">Top: input, ground truth, each variant\'s prediction. Bottom: '
            "pixels where a variant disagrees with the keras model (red).</p>"
        )
    else:
        parts.append('<p class="note">No panel yet (made by <code>unetq show</code>).</p>')

    parts.append("<h2>The original study's metric beside the correct one</h2>")
    parts.append(f"<p>{SEED_METRIC_WHY}</p>")
    parts.append(_html_table(_seed_view(tables.average), sortable=True))

    if not tables.robustness.empty:
        parts.append("<h2>Image conditions</h2>")
        parts.append(_figure(figures.degradation_curves(tables.robustness), "degradation"))
        parts.append(
            "<p class='note'>Largest quantization penalties (keras fg IoU minus the "
            "variant's, same images and condition):</p>"
        )
        parts.append(_html_table(quantization_penalties(tables.robustness), sortable=True))
    for name, cross in run.crosses():
        parts.append(f"<h2>Cross-dataset: {html.escape(name)}</h2>")
        parts.append(_cross_line(read_json(cross.dataset)))
        parts.append(_html_table(main_table(read_csv(cross.average_csv)), sortable=True))

    parts.append("<h2>Machine</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(machine, indent=2))}</pre>")
    parts.append("<h2>Config as run</h2>")
    parts.append(f"<pre>{html.escape(config_text)}</pre>")

    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{STYLE}</style></head><body><main>"
        + "\n".join(p for p in parts if p)
        + f"</main><script>{SORT_SCRIPT}</script></body></html>"
    )
    write_text(run.report, page)
    return run.report


def _figure(png: bytes | None, alt: str) -> str:
    if not png:
        return f'<p class="note">No data yet for: {html.escape(alt)}.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value) -> tuple[str, str]:
    """Display text and sort key of one cell."""
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), str(int(value))
    if isinstance(value, int | np.integer):
        return f"{value:,}", str(value)
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "–", ""
        text = (
            f"{value:.4f}"
            if abs(value) < 1
            else f"{value:,.2f}"
            if abs(value) < 1e4
            else f"{value:,.0f}"
        )
        return text, repr(float(value))
    return html.escape(str(value)), html.escape(str(value))


def _html_table(df: pd.DataFrame, sortable: bool = False) -> str:
    if df is None or df.empty:
        return '<p class="note">No rows yet.</p>'
    cls = "sortable" if sortable else ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for record in df.itertuples(index=False):
        cells = []
        for value in record:
            text, key = _fmt(value)
            kind = ' class="text"' if isinstance(value, str) else ""
            cells.append(f'<td{kind} data-v="{key}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _dataset_line(dataset: dict) -> str:
    if not dataset:
        return ""
    splits = dataset.get("splits", {})
    sizes = ", ".join(f"{k} {v}" for k, v in splits.items())
    return (
        f"<p class='note'>Dataset: {html.escape(str(dataset.get('format', '')))} at "
        f"<code>{html.escape(str(dataset.get('root', '')))}</code>; "
        f"{dataset.get('num_classes', '?')} classes "
        f"({html.escape(', '.join(dataset.get('class_names', [])))}), background = class "
        f"{dataset.get('background_class', '?')}; splits: {sizes}.</p>"
    )


def _cross_line(info: dict) -> str:
    if not info:
        return ""
    count = info.get("images", "?")
    limit = info.get("max_images")
    if isinstance(count, int) and isinstance(limit, int) and limit < count:
        count = f"the first {limit} of {count}"
    return (
        f"<p class='note'>This run's models on every image ({count}) of another dataset: "
        f"{html.escape(str(info.get('format', '')))} at "
        f"<code>{html.escape(str(info.get('root', '')))}</code>, "
        f"{info.get('num_classes', '?')} classes, background = class "
        f"{info.get('background_class', '?')}. Accuracy only (made by "
        "<code>unetq evaluate --data-dir</code>).</p>"
    )


def _recommendation(run_dir: Path) -> str:
    """The answer first: `unetq recommend`'s choice for the best model, at 1 thread and at all
    measured thread counts, with the default accuracy budget."""
    average = read_csv(RunFolder(run_dir).average_csv)
    if average.empty or "threads" not in average:
        return ""
    blocks = []
    for threads in sorted(int(t) for t in average["threads"].dropna().unique()):
        try:
            [rec] = recommend(run_dir, Budgets(threads=threads))
        except UnetqError:
            continue
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(rec))
        ruled = [f"{c.variant} ({c.runtime}): {reason}" for c, reason in rec.others if reason]
        note = f"<p class='note'>Ruled out: {html.escape('; '.join(ruled))}</p>" if ruled else ""
        blocks.append(f"<h3>{threads} thread(s)</h3><ul>{lines}</ul>{note}")
    if not blocks:
        return ""
    return (
        "<h2>Recommendation (fastest within 0.5 fg IoU points of the float model)</h2>"
        + "".join(blocks)
    )


def _best_model(average: pd.DataFrame) -> str | None:
    keras = average[average.get("variant") == "keras"] if "variant" in average else average
    keras = keras.dropna(subset=["fg_iou"]) if "fg_iou" in keras else keras.iloc[0:0]
    if keras.empty:
        return None
    return str(keras.sort_values("fg_iou", ascending=False)["model_id"].iloc[0])


def _slow_variant_note(average: pd.DataFrame) -> str:
    if average.empty or "n_images" not in average:
        return ""
    counts = average.groupby("variant")["n_images"].max()
    full = counts.max()
    fewer = counts[counts < full]
    if fewer.empty:
        return ""
    items = ", ".join(f"{v}: {int(n)} images" for v, n in fewer.items())
    return (
        f"<p class='note'>Evaluated on fewer test images than the other variants ({int(full)}): "
        f"{html.escape(items)} — slow reference kernels; their accuracy has a wider margin.</p>"
    )


def _trained_view(trained: pd.DataFrame) -> pd.DataFrame:
    cols = [
        "model_id",
        "params",
        "gmacs",
        "epochs_run",
        "best_epoch",
        "wall_time_s",
        "seconds_per_epoch",
        "peak_rss_mb",
        "best_val_loss",
        "val_fg_iou",
        "collapsed",
    ]
    return trained[[c for c in cols if c in trained]] if not trained.empty else trained


def _seed_view(average: pd.DataFrame) -> pd.DataFrame:
    cols = ["seed_iou", "seed_dice", "fg_iou", "fg_dice"]
    if average.empty or not set(cols) <= set(average.columns):
        return pd.DataFrame()
    return average.groupby(["variant", "runtime"], as_index=False)[cols].mean()


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
