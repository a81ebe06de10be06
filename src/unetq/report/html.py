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
from unetq.recommend import DEFAULT_MAX_IOU_DROP, Budgets, recommend, summary_lines
from unetq.records import ModelInfo
from unetq.report import figures, inside
from unetq.report.tables import (
    factor_effects,
    guard_table,
    int8_losses,
    latency_columns,
    load_tables,
    main_table,
    quantization_penalties,
    sensitivity_table,
    with_intervals,
)
from unetq.runfolder import RunFolder, read_csv, read_json
from unetq.variants import is_original

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
.warn{color:#8a3b00;background:#fff4e5;padding:.3rem .6rem;border-radius:4px}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;background:#fff;border-radius:6px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;font-size:.86rem;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}
th{background:#eef1f6;position:sticky;top:0;cursor:pointer;user-select:none}
td:first-child,th:first-child,td.text,th.text{text-align:left}
tr:hover td{background:#f4f7fc}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
img{max-width:100%;height:auto;background:#fff;border-radius:6px}
pre{background:#fff;padding:10px;border-radius:6px;overflow-x:auto;font-size:.8rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
.scroll.tall{max-height:70vh;overflow-y:auto}
.answer{background:#eef6ee;border:1px solid #9cc59c;border-radius:6px;padding:.4em 1em}
details{margin:.6em 0;background:#fff;border-radius:6px;padding:.3em .8em;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
summary{cursor:pointer;font-weight:600;padding:.3em 0}
td.wrap{white-space:normal}
"""

# The page records its own size, the images that did not load, the tables of a <section> that
# scroll sideways and where the sections start, so a headless browser test can check that
# nothing sticks out of the window (the report's promise: readable at 1280 px without scrolling
# sideways) and take a picture of a section.
WIDTH_SCRIPT = """
window.addEventListener('load', function(){
  var page = document.scrollingElement || document.documentElement;
  var data = document.documentElement.dataset;
  var count = function(nodes, test){return Array.prototype.filter.call(nodes, test).length;};
  data.scrollWidth = page.scrollWidth;
  data.clientWidth = page.clientWidth;
  data.scrollHeight = page.scrollHeight;
  data.brokenImages = count(document.images, function(img){return !img.naturalWidth;});
  var wide = Array.prototype.filter.call(document.querySelectorAll('section .scroll'),
    function(el){return el.scrollWidth > el.clientWidth;});
  data.wideTables = wide.length;
  data.wideTableWidths = wide.map(function(el){
    var heading = el.previousElementSibling;
    return (heading ? heading.textContent : '?') + ':' + el.scrollWidth + '>' + el.clientWidth;
  }).join(';');
  data.sectionTops = Array.prototype.map.call(document.querySelectorAll('section'), function(el){
    return el.getBoundingClientRect().top + page.scrollTop;
  }).join(',');
});
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
    """Rebuild runs/<study>/report/index.html from the files on disk; recomputes nothing.

    The answer first (the recommendation), then the run's context, one overview, the Pareto
    figures and the guarded variants; every detail table is folded below them.
    """
    run = RunFolder(run_dir)
    tables = load_tables(run.root)
    table = main_table(tables.average)
    dataset = read_json(run.dataset)
    machine = read_json(run.machine)
    title = f"unetq: {html.escape(run.root.name)}"

    parts = [f"<h1>{title}</h1>"]
    if dataset.get("synthetic"):
        parts.append(
            '<p class="banner">SYNTHETIC DATA: these numbers come from the built-in synthetic '
            f"dataset, not real images. {html.escape(dataset.get('note', ''))}</p>"
        )
    parts.append(_recommendation(run.root))
    parts.append(_context(run, dataset, machine, tables.average))
    parts.append(_overview(table))
    parts.append(_pareto(table, dataset))
    parts.append(_factor_effects(tables.average))
    parts.append(_guards(run, tables.average))
    parts.append(_inside_model(run, tables.average))
    parts += _details_sections(run, tables, table, machine)

    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{STYLE}</style></head><body><main>"
        + "\n".join(p for p in parts if p)
        + f"</main><script>{SORT_SCRIPT}{WIDTH_SCRIPT}</script></body></html>"
    )
    write_text(run.report, page)
    return run.report


def _context(run: RunFolder, dataset: dict, machine: dict, average: pd.DataFrame) -> str:
    """What the numbers are about: the data, the user's model, the machine and its noise."""
    lines = [_dataset_line(dataset)]
    for model_id in run.model_ids():
        data = read_json(run.model_info(model_id))
        info = ModelInfo.from_json(data) if data else None
        if info is not None:
            h, w = info.input_hw
            lines.append(
                f"<p class='note'>Model <b>{html.escape(model_id)}</b> from "
                f"<code>{html.escape(info.source)}</code>: {h}x{w} input"
                f"{' (size fixed by unetq)' if info.size_fixed_by_unetq else ''}, "
                f"{html.escape(info.input_norm.describe())} ({html.escape(info.norm_from)}), "
                f"{html.escape(info.describe_head())}.</p>"
            )
    lines.append(_machine_line(machine, average))
    return "".join(lines)


def _machine_line(machine: dict, average: pd.DataFrame) -> str:
    if not machine:
        return ""
    isa = [k for k, v in machine.get("isa", {}).items() if v]
    noise = ""
    if "latency_round_spread" in average and average["latency_round_spread"].notna().any():
        spread = average["latency_round_spread"].dropna()
        noise = (
            f" Noise during the run: one measurement's slowest round was {spread.median():.0%} "
            f"slower than its fastest (median over measurements; up to {spread.max():.0%}); "
            "latencies and speed-ups carry 95% intervals (bootstrap over rounds)."
        )
    return (
        f"<p class='note'>Measured on {html.escape(str(machine.get('cpu_model', '?')))}, "
        f"{machine.get('usable_cores', '?')} usable cores, ISA {html.escape(', '.join(isa))}."
        f"{noise}</p>"
    )


def _overview(table: pd.DataFrame) -> str:
    png = figures.overview(table)
    if not png:
        return ""
    return "<h2>Every model and variant at a glance</h2>" + _figure(png, "overview")


def _pareto(table: pd.DataFrame, dataset: dict) -> str:
    cols = latency_columns(table)
    if not cols or table["fg_iou"].isna().all():
        return ""
    unit = "tile" if dataset.get("mode") == "tile" else "image"
    figs = "".join(
        _figure(figures.accuracy_vs_latency(table, c, unit), f"fg IoU vs {c}") for c in cols
    )
    return f"<h2>Accuracy against latency</h2><div class='grid'>{figs}</div>"


def _factor_effects(average: pd.DataFrame) -> str:
    """The original study's own analysis drawn, its table folded beneath."""
    effects = factor_effects(average)
    if effects.empty:
        return ""
    return (
        "<h2>Effect of each factor</h2>"
        '<p class="note">Mean paired change when one factor changes and all others stay equal '
        "(one thread): a dot per level, with its 95% bootstrap interval over the pairs; an "
        "interval that straddles 0 means no clear effect.</p>"
        + _figure(figures.factor_effects(effects), "effect of each factor")
        + _details(
            f"Effect of each factor: the table ({len(effects)} rows)",
            _html_table(effects, sortable=True),
        )
    )


def _inside_model(run: RunFolder, average: pd.DataFrame) -> str:
    """The best model layer by layer (models/<id>/layers.csv): where its time goes, its blocks,
    time per block against the whole call, and the layers that stand out."""
    best = _best_model(average)
    if best is None:
        return ""
    heading = f"<section id='inside'><h2>Inside the model: {html.escape(best)}</h2>"
    layers = inside.read_layers(run, best)
    if layers.empty:
        command = f"unetq inspect {run.model_dir(best)}"
        return (
            f"{heading}<p class='note'>No per-layer table for {html.escape(best)} yet; "
            f"<code>{html.escape(command)}</code> writes it.</p></section>"
        )
    sentence = inside.where_time_goes(layers, _recommended_variant(run.root))
    return "".join(
        [
            heading,
            f"<p class='answer'>{html.escape(sentence)}</p>" if sentence else "",
            _inside_figures(layers),
            _untimed_line(layers),
            _layer_table("Slowest layers", inside.slowest_layers(layers)),
            _layer_table("Farthest from their bound", inside.farthest_from_bound(layers)),
            _layer_table("Largest quantization error (int8)", inside.largest_errors(layers)),
            "</section>",
        ]
    )


def _inside_figures(layers: pd.DataFrame) -> str:
    colors = figures.block_colors(inside.block_order(layers))
    blocks, skips = inside.unet_blocks(layers), inside.skip_connections(layers)
    parts = [
        _figure(figures.unet(blocks, skips, colors), "the U-Net's blocks"),
        "<p class='note'>The blocks in the order they run, one level lower for each halving "
        "of the resolution, each box as tall as its resolution, labelled with the output "
        "shape of its last layer; dashed: skip connections.</p>",
    ]
    times, calls = inside.block_times(layers)
    if not times.empty:
        parts += [
            _figure(figures.time_per_block(times, calls, colors), "time per block"),
            "<p class='note'>Each variant whose runtime times its layers, at its smallest "
            "thread count: the layers' median times stacked by block, against the median time "
            "of the whole call measured in the same session (the rest is the runtime's own "
            "overhead between layers).</p>",
        ]
    return "".join(parts)


def _untimed_line(layers: pd.DataFrame) -> str:
    note = inside.untimed_note(layers)
    return f"<p class='note'>Not timed layer by layer: {html.escape(note)}</p>" if note else ""


def _layer_table(title: str, rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    wrap = ("kernel", "kind", "block")  # at spaces, when the window is narrow
    return f"<h3>{html.escape(title)}</h3>" + _html_table(rows, sortable=True, wrap=wrap)


def _recommended_variant(run_dir: Path) -> str | None:
    """The variant the report recommends at one thread (None: keras itself, or no results)."""
    try:
        [rec] = recommend(run_dir, Budgets(threads=1))
    except UnetqError:
        return None
    return rec.chosen.variant if rec.chosen else None


def _int8_loss_lines(run: RunFolder, average: pd.DataFrame) -> str:
    """Plainly: where plain int8 loses more than the budget on this dataset, and what the
    guarded variant keeps."""
    best = _best_model(average)
    if best is None:
        return ""
    budget = (
        run.load_config().compress.max_iou_drop if run.config.exists() else DEFAULT_MAX_IOU_DROP
    )
    lines = []
    for loss in int8_losses(average, best, budget):
        kept = (
            f"{loss['guarded']} loses {loss['guarded_drop']:.1f}"
            if np.isfinite(loss["guarded_drop"])
            else f"{loss['guarded']} was not made"
        )
        lines.append(
            f"<p class='warn'>On this dataset plain {loss['plain']} loses "
            f"<b>{loss['drop']:.1f} points</b> of test fg IoU against keras on {html.escape(best)}"
            f" (budget {budget:g}); {kept}.</p>"
        )
    return "".join(lines)


def _guards(run: RunFolder, average: pd.DataFrame) -> str:
    guards = guard_table(run.root, average)
    losses = _int8_loss_lines(run, average)
    if guards.empty:
        return f"<h2>Accuracy-guarded variants</h2>{losses}" if losses else ""
    parts = [
        "<h2>Accuracy-guarded variants</h2>",
        losses,
        '<p class="note">tflite-int8-mixed keeps the layers most sensitive to quantization '
        "in float (ranked by the TFLite quantization debugger's RMSE / scale) until the "
        "validation fg IoU is within the budget of the float model's; openvino-int8-guarded "
        "lets NNCF's accuracy control return operations to float for the same budget. "
        "predicted_drop: the validation fg IoU drop the guard measured (points), "
        "predicted_high: the high end of its 95% bootstrap interval over the validation "
        "images, which must be within the budget; test_drop: the drop on the test images "
        "against keras, which the guard did not see. "
        "cost_ms: its median at one thread minus that of the plain int8 variant it is "
        "compared with (versus).</p>",
        _html_table(guards, sortable=True),
    ]
    best = _best_model(average)
    layers = sensitivity_table(run.root, best) if best else pd.DataFrame()
    if not layers.empty:
        parts.append(
            _details(
                f"Most sensitive layers of {best}",
                _html_table(layers, sortable=True),
            )
        )
    return "".join(parts)


def _details_sections(run: RunFolder, tables, table: pd.DataFrame, machine: dict) -> list[str]:
    """Everything else, folded: open a section to read it."""
    sections = [
        _details(
            f"All results ({len(table)} rows)",
            '<p class="note">One row per model, variant and runtime. Accuracy on the test split '
            "at the model's input resolution; latency is the median of timed model calls after "
            "warm-up (ms_1t: one thread, ms_Nt: N threads), with its 95% interval from a "
            "bootstrap over rounds in brackets; x_keras_Nt is keras' time over this one's (for a "
            "model given as an ONNX or .tflite file: that file's, the onnx or tflite row), taken "
            "round by round as the measurements took turns, then the median of the rounds (a "
            "slowdown of the whole machine that hits both alike cancels out); memory is the peak "
            "resident set of a fresh process minus its size after imports. Click a column to "
            "sort.</p>"
            + _html_table(with_intervals(table), sortable=True, tall=True)
            + _slow_variant_note(tables.average),
        ),
        _details("Size and memory per variant", _figure(figures.size_and_memory(table), "size")),
        _details(
            "Training",
            _figure(figures.training_curves(run.root), "training curves")
            + _html_table(_trained_view(tables.trained), sortable=True),
        ),
        _details(
            "Compression check against the float model",
            _html_table(_compressed_view(tables.compressed), sortable=True),
        ),
    ]
    throughput = read_csv(run.throughput_csv)
    if not throughput.empty:
        sections.insert(1, _details("Throughput: many images", _throughput_table(throughput)))
    if run.panel.exists():
        sections.append(
            _details(
                "One image, every variant",
                _figure(run.panel.read_bytes(), "single-image panel")
                + '<p class="note">Top: input, ground truth, each variant\'s prediction. '
                "Bottom: pixels where a variant disagrees with the keras model (red).</p>",
            )
        )
    sections.append(
        _details(
            "The original study's metric beside the correct one",
            f"<p>{SEED_METRIC_WHY}</p>" + _html_table(_seed_view(tables.average), sortable=True),
        )
    )
    if not tables.robustness.empty:
        sections.append(
            _details(
                "Image conditions",
                _figure(figures.degradation_curves(tables.robustness), "degradation")
                + "<p class='note'>Largest quantization penalties (keras fg IoU minus the "
                "variant's, same images and condition):</p>"
                + _html_table(quantization_penalties(tables.robustness), sortable=True),
            )
        )
    for name, cross in run.crosses():
        sections.append(
            _details(
                f"Cross-dataset: {name}",
                _cross_line(read_json(cross.dataset))
                + _html_table(main_table(read_csv(cross.average_csv)), sortable=True),
            )
        )
    sections.append(_details("Machine", f"<pre>{html.escape(json.dumps(machine, indent=2))}</pre>"))
    sections.append(_details("Config as run", f"<pre>{html.escape(_read_text(run.config))}</pre>"))
    return sections


THROUGHPUT_VIEW = {
    "model_id": "model", "variant": "variant", "runtime": "runtime", "threads": "threads",
    "setting": "setting", "batch": "images per call", "images_per_s": "images/s",
    "images_per_s_ci95_low": "95% low", "images_per_s_ci95_high": "95% high",
    "vs_keras": "x keras best", "model_memory_mb": "memory MB", "error": "error",
}  # fmt: skip


def _throughput_table(throughput: pd.DataFrame) -> str:
    """Every measured setting (throughput_results.csv), as measured."""
    view = throughput[[c for c in THROUGHPUT_VIEW if c in throughput]].rename(
        columns=THROUGHPUT_VIEW
    )
    return (
        '<p class="note">Images per second over a stream of images at every core, per setting: '
        "N images per model call (batch N), or OpenVINO's asynchronous requests with its "
        "THROUGHPUT hint (async: images per call = requests in flight). The median over rounds "
        "in which the settings took turns, with its 95% bootstrap interval; x keras best: over "
        "keras at its best setting, round by round; memory: the peak resident set of the fresh "
        "process at that setting minus its size after imports. In tile mode an image is a "
        "tile.</p>" + _html_table(view, sortable=True)
    )


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _compressed_view(compressed: pd.DataFrame) -> pd.DataFrame:
    """The compression table without full paths (the file name says enough)."""
    if compressed.empty:
        return compressed
    view = compressed.drop(columns=[c for c in ("Model", "Quantization") if c in compressed])
    if "path" in view:
        view["path"] = [Path(str(p)).name if isinstance(p, str) else p for p in view["path"]]
    return view


def _figure(png: bytes | None, alt: str) -> str:
    if not png:
        return f'<p class="note">No data yet for: {html.escape(alt)}.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value) -> tuple[str, str]:
    """Display text and sort key of one cell; a (value, text) pair shows text, sorts by value."""
    if isinstance(value, tuple) and len(value) == 2:
        key = _fmt(value[0])[1]
        return html.escape(str(value[1])), key
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


def _html_table(
    df: pd.DataFrame, sortable: bool = False, tall: bool = False, wrap: tuple[str, ...] = ()
) -> str:
    """`wrap`: columns whose text may break over lines (at spaces) when the table is too wide."""
    if df is None or df.empty:
        return '<p class="note">No rows yet.</p>'
    cls = "sortable" if sortable else ""
    first = df.iloc[0]
    head = "".join(_th(c, first[c]) for c in df.columns)
    wraps = [c in wrap for c in df.columns]
    rows = []
    for record in df.itertuples(index=False):
        cells = []
        for value, wrapping in zip(record, wraps, strict=True):
            text, key = _fmt(value)
            cells.append(f'<td{_cell_class(value, wrapping)} data-v="{key}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    scroll = "scroll tall" if tall else "scroll"
    return (
        f'<div class="{scroll}"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _cell_class(value, wrapping: bool) -> str:
    names = [n for n, on in (("text", isinstance(value, str)), ("wrap", wrapping)) if on]
    return f' class="{" ".join(names)}"' if names else ""


def _th(column, value) -> str:
    """A column's head, aligned like its cells (text to the left)."""
    kind = ' class="text"' if isinstance(value, str) else ""
    return f"<th{kind}>{html.escape(str(column))}</th>"


def _dataset_line(dataset: dict) -> str:
    if not dataset:
        return ""
    splits = dataset.get("splits", {})
    sizes = ", ".join(f"{k} {v}" for k, v in splits.items())
    return (
        f"<p class='note'>Dataset: {html.escape(str(dataset.get('format', '')))} at "
        f"<code>{html.escape(str(dataset.get('root', '')))}</code>; "
        f"{_classes_text(dataset)}; splits: {sizes}.</p>{_tile_line(dataset)}"
    )


def _classes_text(dataset: dict) -> str:
    """Each class with its mask value, and which classes the foreground scores count."""
    names = dataset.get("class_names", [])
    raw = {int(v): int(k) for k, v in dataset.get("mask_values", {}).items()}
    background = dataset.get("background_class", "?")
    classes = [
        f"{i} {html.escape(name)}" + (f" (mask value {raw[i]})" if i in raw else "")
        for i, name in enumerate(names)
    ]
    foreground = [str(i) for i in range(len(names)) if i != background]
    return (
        f"{dataset.get('num_classes', '?')} classes: {', '.join(classes)}; fg IoU and Dice "
        f"score class{'es' if len(foreground) > 1 else ''} {', '.join(foreground)} against "
        f"background class {background}"
    )


def _tile_line(dataset: dict) -> str:
    if dataset.get("mode") != "tile":
        return ""
    return (
        f"<p class='note'>Tile mode: images are segmented at their own resolution by "
        f"{dataset.get('tile')} px tiles overlapping by {dataset.get('tile_overlap')} px and "
        "stitched back; accuracy is scored on the whole images. Latency is per tile (one model "
        f"call); a whole test image takes {dataset.get('tiles_per_image', float('nan')):.1f} "
        "tiles on average (ms per image = that many calls).</p>"
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
    """The answer first: `unetq recommend`'s choice for the best model, at every measured
    thread count, and for throughput where it was measured, with the default accuracy budget."""
    average = read_csv(RunFolder(run_dir).average_csv)
    if average.empty or "threads" not in average:
        return ""
    blocks = []
    threads = sorted(int(t) for t in average["threads"].dropna().unique())
    asked = [(t, Budgets(threads=t), f"{t} thread(s), one image at a time") for t in threads]
    if "throughput_images_per_s" in average:
        measured = average.dropna(subset=["throughput_images_per_s"])["threads"].unique()
        for t in sorted(int(t) for t in measured):
            budgets = Budgets(threads=t, objective="throughput")
            asked.append((t, budgets, f"{t} thread(s), many images: throughput"))
    for _, budgets, title in asked:
        try:
            [rec] = recommend(run_dir, budgets)
        except UnetqError:
            continue
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(rec))
        ruled = [f"{c.variant} ({c.runtime}): {reason}" for c, reason in rec.others if reason]
        note = f"<p class='note'>Ruled out: {html.escape('; '.join(ruled))}</p>" if ruled else ""
        blocks.append(f"<h3>{html.escape(title)}</h3><ul>{lines}</ul>{note}")
    if not blocks:
        return ""
    return (
        "<div class='answer'><h2>Recommendation: the fastest variant within 0.5 fg IoU points "
        "of the float model</h2>" + "".join(blocks) + "</div>"
    )


def _best_model(average: pd.DataFrame) -> str | None:
    keras = (
        average[average["variant"].map(is_original).astype(bool)]
        if "variant" in average
        else average
    )
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
