"""The best model from inside: its per-layer table (`models/<model_id>/layers.csv`, written by
`unetq inspect`) as U-Net blocks, time per block and variant, the layers that stand out, and
the one line that says where the time goes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from unetq.inside.table import where_time_goes as line_of
from unetq.runfolder import RunFolder, read_csv
from unetq.variants import variant_rank

# layers.csv's columns by type (unetq.inside.table.COLUMNS)
NUMBERS = [
    "threads",
    "index",
    "params",
    "macs",
    "bytes",
    "time_ms",
    "call_ms",
    "bound_ms",
    "x_bound",
    "error",
]
TEXTS = ["variant", "runtime", "layer", "kind", "block", "output_shape", "precision", "kernel"]
NO_BLOCK = "(no block)"
# kinds that are not a block's computation: the model's input, and runtime-only nodes (reorders)
NOT_A_BLOCK = ("input", "runtime")
# why a runtime gives no per-layer times
UNTIMED = {
    "litert": "LiteRT does not expose per-operator times to Python; the C++ benchmark_model "
    "tool with --enable_op_profiling would",
    "keras": "only its total",
}


def read_layers(run: RunFolder, model_id: str) -> pd.DataFrame:
    """The model's layers.csv with typed columns; an empty frame when there is none."""
    layers = read_csv(run.layers(model_id))
    if layers.empty:
        return layers
    for column in NUMBERS:
        layers[column] = pd.to_numeric(layers.get(column), errors="coerce")
    for column in TEXTS:
        layers[column] = layers.get(column, pd.Series("", index=layers.index)).fillna("")
    return layers


def unet_blocks(layers: pd.DataFrame) -> list[tuple[str, str]]:
    """(block, output shape of its last layer) in row order: the U-Net as it is drawn."""
    rows = _one_run(layers)
    rows = rows[~rows["kind"].isin(NOT_A_BLOCK) & (rows["block"] != "")]
    return list(rows.groupby("block", sort=False)["output_shape"].last().items())


def block_order(layers: pd.DataFrame) -> list[str]:
    """Every block in row order, also those of the input and of runtime-only nodes (which only
    some variants have)."""
    return list(dict.fromkeys(b for b in layers["block"] if b))


def _one_run(layers: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first variant x threads: the model's layers once."""
    first = layers[["variant", "threads"]].iloc[0]
    return layers[(layers["variant"] == first["variant"]) & (layers["threads"] == first["threads"])]


def skip_connections(layers: pd.DataFrame) -> list[tuple[str, str]]:
    """(encoder block, decoder block) pairs at the same resolution where the decoder block
    concatenates: the U-Net's long skips (a residual add inside a block is not one)."""
    names = [block for block, _ in unet_blocks(layers)]
    joined = set(layers.loc[layers["kind"] == "concatenate", "block"])
    return [
        (encoder, decoder)
        for decoder in names
        if decoder in joined and decoder.startswith("decoder")
        for encoder in names
        if encoder == decoder.replace("decoder", "encoder", 1)
    ]


def timed_rows(layers: pd.DataFrame) -> pd.DataFrame:
    """Rows of the variants whose runtime measured per-layer times, each at its smallest thread
    count, variants in the registry's order."""
    if layers.empty:
        return layers
    timed = layers[layers.groupby("variant")["time_ms"].transform(lambda t: t.notna().any())]
    fewest = timed.groupby("variant")["threads"].transform("min")
    timed = timed[timed["threads"] == fewest]
    order = timed["variant"].map(variant_rank)
    return (
        timed.assign(_rank=order)
        .sort_values(["_rank", "index"], kind="stable")
        .drop(columns="_rank")
    )


def untimed_variants(layers: pd.DataFrame) -> dict[str, list[str]]:
    """runtime -> its variants with no per-layer time on any row."""
    if layers.empty:
        return {}
    none = layers.groupby(["runtime", "variant"])["time_ms"].apply(lambda t: t.isna().all())
    out: dict[str, list[str]] = {}
    for (runtime, variant), untimed in none.items():
        if untimed:
            out.setdefault(runtime, []).append(variant)
    return {r: sorted(v, key=variant_rank) for r, v in out.items()}


def untimed_note(layers: pd.DataFrame) -> str:
    """One sentence per runtime without per-layer times, naming its variants (plain text);
    keras last: it is the reference, not a candidate."""
    untimed = untimed_variants(layers)
    return " ".join(
        f"{', '.join(untimed[runtime])}: {UNTIMED.get(runtime, 'no per-layer times')}."
        for runtime in sorted(untimed, key=lambda r: r == "keras")
    )


def block_times(layers: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """ms per block (columns, in the U-Net's order) per timed variant (rows), and each
    variant's measured whole-call time."""
    timed = timed_rows(layers)
    if timed.empty:
        return pd.DataFrame(), pd.Series(dtype=float)
    blocks = timed["block"].replace("", NO_BLOCK)
    times = timed.assign(block=blocks).pivot_table(
        index="variant", columns="block", values="time_ms", aggfunc="sum", sort=False
    )
    order = [b for b in block_order(layers) if b in times.columns]
    times = times.reindex(columns=order + [b for b in times.columns if b not in order])
    calls = timed.groupby("variant", sort=False)["call_ms"].first()
    return times.fillna(0.0), calls.reindex(times.index)


def where_time_goes(layers: pd.DataFrame, variant: str | None = None) -> str:
    """The line of `unetq inspect` (inside.table.where_time_goes) for `variant` if it was timed,
    else the fastest timed variant, at its smallest thread count."""
    timed = timed_rows(layers)
    if timed.empty:
        return ""
    if variant not in set(timed["variant"]):
        variant = str(timed.groupby("variant")["call_ms"].first().idxmin())
    return line_of(timed[timed["variant"] == variant].to_dict("records"))


def slowest_layers(layers: pd.DataFrame, top: int = 8) -> pd.DataFrame:
    """The layers that take the most time, with their share of their variant's call."""
    timed = timed_rows(layers).dropna(subset=["time_ms"])
    rows = timed.sort_values("time_ms", ascending=False).head(top)
    view = _view(rows, ["time_ms", "x_bound"], precision=False)
    view.insert(
        view.columns.get_loc("time_ms") + 1, "of_call", _percent(rows["time_ms"] / rows["call_ms"])
    )
    return view


def farthest_from_bound(layers: pd.DataFrame, top: int = 8) -> pd.DataFrame:
    """The layers whose measured time is the largest multiple of their bound."""
    timed = timed_rows(layers)
    timed = timed[np.isfinite(timed["x_bound"]) & (timed["bound_ms"] > 0)]
    rows = timed.sort_values("x_bound", ascending=False).head(top)
    return _view(rows, ["time_ms", "bound_ms", "bound", "x_bound"], precision=False, shape=False)


def largest_errors(layers: pd.DataFrame, top: int = 8) -> pd.DataFrame:
    """The layers whose int8 output is farthest from the float model's (relative RMS)."""
    if layers.empty:
        return layers
    rows = layers.dropna(subset=["error"]).drop_duplicates(["variant", "index"])
    rows = rows.sort_values("error", ascending=False).head(top)
    return _view(rows, ["error"])


def _view(
    rows: pd.DataFrame, measures: list[str], precision: bool = True, shape: bool = True
) -> pd.DataFrame:
    """The columns a reader identifies a layer by, then `measures` (times to three significant
    digits: a layer may take microseconds); kernel only where a runtime named one, its parts
    spaced so that a long one may wrap."""
    columns = ["variant", "layer", "kind", "block", "output_shape", "precision", "kernel"]
    if not precision:
        columns.remove("precision")
    if not shape:  # room for four measures at 1280 px
        columns.remove("output_shape")
    if not (rows["kernel"] != "").any():
        columns.remove("kernel")
    view = rows[columns + measures].reset_index(drop=True)
    if "kernel" in view:
        view["kernel"] = view["kernel"].str.replace("+", " + ", regex=False)
    for column in ("time_ms", "bound_ms"):
        if column in view:
            view[column] = [(v, _digits(v)) for v in view[column]]
    return view


def _digits(ms: float) -> str:
    """Three significant digits, never in exponent notation: 0.0000321, 0.0619, 12.3."""
    if not np.isfinite(ms):
        return "–"
    return np.format_float_positional(ms, precision=3, unique=False, fractional=False, trim="-")


def _percent(fractions: pd.Series) -> list:
    return [(f, f"{f:.0%}") if np.isfinite(f) else (np.nan, "–") for f in fractions]


def resolution(shape: str) -> int:
    """The height of an output shape "80x80x64" (0 when it has none)."""
    match = re.match(r"(\d+)x", shape)
    return int(match.group(1)) if match else 0
