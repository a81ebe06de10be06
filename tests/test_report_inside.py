"""The report's "Inside the model" section and the factor effects figure, from a synthetic
layers.csv of a real model's layer list (insidedata.py) in a copy of the tiny run."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from insidedata import (
    BEST,
    FG_IOU,
    XCEPTION_BLOCKS,
    inside_report,
    model_layer_list,
    synthetic_average,
    synthetic_layers,
)
from unetq.report import figures, inside
from unetq.runfolder import RunFolder


@pytest.fixture(scope="module")
def layers(tmp_path_factory) -> pd.DataFrame:
    """The synthetic layers.csv of the best model, read back as the report reads it."""
    run = RunFolder(tmp_path_factory.mktemp("layers"))
    run.model_dir(BEST).mkdir(parents=True)
    synthetic_layers(BEST, model_layer_list("xception", 8, 32)).to_csv(
        run.layers(BEST), index=False
    )
    return inside.read_layers(run, BEST)


def test_blocks_are_named_in_row_order_with_the_shape_of_their_last_layer(layers):
    blocks = inside.unet_blocks(layers)
    assert [b for b, _ in blocks] == XCEPTION_BLOCKS
    assert dict(blocks)["encoder 16px"] == "16x16x16" and dict(blocks)["head"] == "32x32x3"
    # the layout reorders of the timed variants last
    assert inside.block_order(layers) == [b for b, _ in blocks] + ["runtime"]
    assert inside.skip_connections(layers) == []  # xception's adds are residual, not skips


def test_skip_connections_join_encoder_and_decoder_blocks_that_concatenate():
    classic = synthetic_layers("c", model_layer_list("classic", 8, 32), threads=(1,))
    classic[inside.TEXTS] = classic[inside.TEXTS].fillna("")
    skips = inside.skip_connections(classic)
    assert ("encoder 32px", "decoder 32px") in skips and len(skips) == 4


def test_block_times_add_up_to_the_timed_layers_at_the_fewest_threads(layers):
    times, calls = inside.block_times(layers)
    assert list(times.index) == ["openvino-fp32", "openvino-int8"]  # LiteRT, keras: untimed
    assert list(times.columns) == inside.block_order(layers)
    one = layers[(layers["threads"] == 1) & (layers["variant"] == "openvino-int8")]
    assert times.loc["openvino-int8"].sum() == pytest.approx(one["time_ms"].sum())
    assert calls["openvino-int8"] == pytest.approx(one["call_ms"].iloc[0])
    assert (times.sum(axis=1) < calls).all()  # the parts add up to almost the whole


def test_where_the_time_goes_in_one_line(layers):
    line = inside.where_time_goes(layers, "openvino-int8")
    pattern = (
        r"openvino-int8 at 1 thread: \d+% in transposed convolutions, \d+% in the "
        r"(encoder|bottleneck|decoder) \d+px block; \d+\.\dx its limit \(its layers take "
        r"[\d.]+ ms of a [\d.]+ ms call\)\."
    )
    assert re.fullmatch(pattern, line), line
    # an untimed (or no) recommended variant: the fastest timed one
    assert inside.where_time_goes(layers, "tflite-int8").startswith("openvino-int8 at 1 thread")
    assert inside.where_time_goes(layers, None).startswith("openvino-int8")


def test_untimed_variants_are_named_with_the_reason(layers):
    assert inside.untimed_variants(layers) == {"keras": ["keras"], "litert": ["tflite-int8"]}
    note = inside.untimed_note(layers)
    assert "tflite-int8: LiteRT does not expose per-operator times to Python" in note
    assert "--enable_op_profiling" in note and "keras: only its total." in note


def test_layer_tables_are_sorted_largest_first(layers):
    slow = inside.slowest_layers(layers)
    assert len(slow) == 8 and slow["time_ms"].is_monotonic_decreasing
    assert {"variant", "layer", "kind", "block", "output_shape", "kernel"} <= set(slow)
    assert all(0 < share < 1 for share, _ in slow["of_call"])
    far = inside.farthest_from_bound(layers)
    assert far["x_bound"].is_monotonic_decreasing and np.isfinite(far["x_bound"]).all()
    errors = inside.largest_errors(layers)
    assert errors["error"].is_monotonic_decreasing
    assert set(errors["variant"]) <= {"tflite-int8", "openvino-int8"}
    assert not errors.duplicated(["variant", "layer"]).any()  # once, not once per thread count


def test_figures_draw_the_blocks_the_times_and_the_factor_effects(layers):
    colors = figures.block_colors(inside.block_order(layers))
    assert figures.unet(inside.unet_blocks(layers), [], colors)[:4] == b"\x89PNG"
    times, calls = inside.block_times(layers)
    assert figures.time_per_block(times, calls, colors)[:4] == b"\x89PNG"
    from unetq.report.tables import factor_effects

    effects = factor_effects(synthetic_average(FG_IOU))
    assert figures.factor_effects(effects)[:4] == b"\x89PNG"
    assert figures.factor_effects(pd.DataFrame()) is None


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> RunFolder:
    return inside_report(tmp_path_factory)


def test_the_report_shows_the_best_model_inside_and_the_factor_effects(reported):
    page = reported.report.read_text()
    section = page[page.index("<section id='inside'>") : page.index("</section>")]
    assert f"Inside the model: {BEST}" in section
    assert re.search(r"class='answer'>openvino-int8 at 1 thread: \d+% in transposed", section)
    assert 'alt="the U-Net' in section and 'alt="time per block"' in section
    assert "LiteRT does not expose per-operator times to Python" in section
    for title in ("Slowest layers", "Farthest from their bound", "Largest quantization error"):
        assert f"<h3>{title}" in section
    effects = page[page.index("<h2>Effect of each factor</h2>") :]
    assert effects.index('alt="effect of each factor"') < effects.index("<details>")


def test_without_a_layer_table_the_section_says_how_to_make_one(tmp_path_factory):
    run = inside_report(tmp_path_factory, with_layers=False)
    page = run.report.read_text()
    assert f"No per-layer table for {BEST} yet" in page
    assert f"unetq inspect {run.model_dir(BEST)}</code>" in page


def test_overview_colour_bars_of_a_single_model_keep_their_labels_apart(monkeypatch):
    """The overview's colour bars once squeezed their labels into each other (one model)."""
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    variants = ["keras", "tflite-fp32", "tflite-int8", "openvino-fp32", "openvino-int8"]
    table = pd.DataFrame(
        {
            "model": "xception-f32-bn-e50",
            "variant": variants,
            "runtime": "r",
            "fg_iou": [0.80, 0.80, 0.79, 0.80, 0.797],
            "x_keras_1t": [1.0, 3.1, 5.2, 4.0, 9.7],
        }
    )
    figures.overview(table)
    (fig,) = drawn
    fig.tight_layout()
    fig.canvas.draw()
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
    for bar in bars:
        boxes = sorted(
            (t.get_window_extent() for t in bar.get_yticklabels() if t.get_text()),
            key=lambda box: box.y0,
        )
        assert len(boxes) >= 2  # a label's height of space between two labels
        assert all(
            high.y0 - low.y1 >= low.height for low, high in zip(boxes, boxes[1:], strict=False)
        )
