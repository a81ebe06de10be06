"""Measured peaks (unetq.bench.peaks) at the tiny scale: figures, kernels, the child process."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from unetq.bench import peaks as pk
from unetq.errors import UnetqError

TINY_MACS = 32 * 32 * 8 * 8 * 9  # 3x3 "same" conv, 32 -> 32 channels on 8x8


@pytest.fixture(scope="module")
def tiny():
    """One fresh child process measures everything (TensorFlow is imported there, not here)."""
    return pk.measure_in_child([1], "tiny")


def figures(peaks: dict):
    for runtime in ("openvino", "litert"):
        for precision, entry in peaks[runtime].items():
            for threads, fig in entry.items():
                if threads != "reason":
                    yield runtime, precision, fig


def test_every_figure_is_positive_and_finite(tiny):
    found = {(runtime, precision) for runtime, precision, _ in figures(tiny)}
    assert {
        ("openvino", "f32"),
        ("openvino", "int8"),
        ("litert", "f32"),
        ("litert", "int8"),
    } <= found
    for _, _, fig in figures(tiny):
        assert fig["gmacs"] > 0 and math.isfinite(fig["gmacs"])
        assert fig["ms"] > 0 and math.isfinite(fig["ms"])
        assert fig["kernel"]
    bf16 = tiny["openvino"]["bf16"]
    assert "1" in bf16 or isinstance(bf16["reason"], str)


def test_gmacs_is_the_convolutions_multiply_adds_over_the_median_call(tiny):
    assert tiny["macs"] == TINY_MACS
    assert tiny["shape"].startswith("conv 3x3 32->32 on 8x8")
    for _, _, fig in figures(tiny):
        assert fig["gmacs"] == pytest.approx(TINY_MACS / (fig["ms"] * 1e-3) / 1e9, rel=1e-3)


def test_int8_peaks_ran_int8_kernels(tiny):
    ov_kernel = tiny["openvino"]["int8"]["1"]["kernel"]
    assert "i8" in ov_kernel.lower() or "u8" in ov_kernel.lower()
    assert "int8" in tiny["litert"]["int8"]["1"]["kernel"]
    assert "i8" not in tiny["openvino"]["f32"]["1"]["kernel"].lower()
    if "1" in tiny["openvino"]["bf16"]:
        assert "bf16" in tiny["openvino"]["bf16"]["1"]["kernel"]


def test_bandwidth_and_the_helpers_the_limit_reads(tiny):
    assert pk.bandwidth_gbs(tiny, 1) > 0
    assert pk.bandwidth_gbs(tiny, 2) is None
    assert pk.peak_gmacs(tiny, "litert", "int8", 1) == tiny["litert"]["int8"]["1"]["gmacs"]
    assert pk.peak_gmacs(tiny, "litert", "bf16", 1) is None
    assert pk.peak_gmacs(tiny, "openvino", "int8", 2) is None
    assert pk.peak_gmacs({}, "openvino", "f32", 1) is None


def test_peaks_survive_a_json_round_trip_into_machine_info(tiny):
    info = pk.with_peaks({"cpu_model": "x"}, tiny)
    again = json.loads(json.dumps(info))
    assert again == info and again["peaks"] == tiny and again["cpu_model"] == "x"


def test_a_kernel_of_another_precision_is_a_reason_not_a_figure():
    def measure(threads: int) -> dict:
        pk.check_ov_kernel("int8", "brgconv_avx512_f32", "f32")
        return {"gmacs": 1.0}

    entry = pk.per_thread([1], measure)
    assert "not an int8 kernel" in entry["reason"]
    assert pk.peak_gmacs({"openvino": {"int8": entry}}, "openvino", "int8", 1) is None
    with pytest.raises(pk.KernelMismatch, match="as f32"):
        pk.check_ov_kernel("bf16", "brgconv_avx512_f32", "f32")


def test_openvino_refusing_is_one_line():
    model = pk.ov_conv_model(pk.SCALES["tiny"], int8=False)
    with pytest.raises(UnetqError) as caught:
        pk.compile_conv(model, threads=1, hint="int3")
    message = str(caught.value)
    assert message.startswith("OpenVINO cannot compile the peak convolution")
    assert "\n" not in message and "INFERENCE_PRECISION_HINT" in message


def test_bad_requests_and_a_failing_child_are_one_line(monkeypatch, capsys):
    with pytest.raises(UnetqError, match="unknown peak scale 'huge'"):
        pk.measure_in_child([1], "huge")
    with pytest.raises(UnetqError, match="thread counts must be >= 1"):
        pk.measure_peaks([0], "tiny")
    assert pk.main(["--scale", "huge"]) == 2
    assert capsys.readouterr().err.strip().startswith("peaks error: unknown peak scale")

    def failed(cmd, **_):
        return subprocess.CompletedProcess(cmd, 2, "", "a warning\npeaks error: no CPU\n")

    monkeypatch.setattr(pk.subprocess, "run", failed)
    with pytest.raises(UnetqError, match="^measuring the peaks failed: peaks error: no CPU$"):
        pk.measure_in_child([1], "tiny")
