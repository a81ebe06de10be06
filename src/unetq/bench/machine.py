"""The machine a benchmark ran on: CPU model, cores, ISA flags, memory, library versions."""

from __future__ import annotations

import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from unetq.bench.probe import load_average
from unetq.runtimes import usable_cores

ISA_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
PACKAGES = (
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "ai-edge-litert",
    "openvino",
    "nncf",
    "onnxruntime",
    "tf2onnx",
    "numpy",
    "unetq",
)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, ISA flags relevant to int8/fp16/bf16, OS, Python and library versions."""
    cpuinfo = _read_text("/proc/cpuinfo")
    model = _first_field(cpuinfo, "model name") or platform.processor() or platform.machine()
    flags = set((_first_field(cpuinfo, "flags") or "").split())
    cores = set()
    for block in cpuinfo.split("\n\n"):
        package, core = _first_field(block, "physical id"), _first_field(block, "core id")
        if package is not None and core is not None:
            cores.add((package, core))
    physical = len(cores) or psutil.cpu_count(logical=False)
    usable = usable_cores()
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    isa = {flag: flag in flags for flag in ISA_FLAGS}
    isa["amx"] = any(f.startswith("amx") for f in flags)
    family = _first_field(cpuinfo, "cpu family")
    mhz = _first_field(cpuinfo, "cpu MHz")
    return {
        "cpu_model": model,
        "cpu_family": int(family) if family and family.isdigit() else None,
        "cpu_mhz": float(mhz) if mhz else None,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable,
        "isa": isa,
        "memory_total_mb": _mem_total_mb(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": load_average(),  # other work on the machine skews timings
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _first_field(cpuinfo: str, key: str) -> str | None:
    m = re.search(rf"^{re.escape(key)}\s*:\s*(.*)$", cpuinfo, re.M)
    return m.group(1).strip() if m else None


def _mem_total_mb() -> float | None:
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read_text("/proc/meminfo"), re.M)
    return round(int(m.group(1)) / 1024.0, 1) if m else None


def int8_macs_per_cycle(info: dict[str, Any]) -> tuple[int, str]:
    """Peak int8 multiply-adds per cycle of one core, from the ISA, and where the figure comes
    from. AMX: one TDPBUSD tile op = 16x64x16 MACs per 16 cycles (1024 a cycle). AVX-512 VNNI:
    VPDPBUSD zmm does 64 MACs; Intel server cores issue 2 a cycle, AMD Zen 4 one (its 512-bit
    ops run as two 256-bit halves), Zen 5 two (measured here: 7.3 G VPDPBUSD zmm/s at 3.65 GHz).
    AVX-VNNI (256-bit only): 2 x 32. AVX2: VPMADDUBSW + VPMADDWD, about 32."""
    isa = info.get("isa", {})
    model = str(info.get("cpu_model", ""))
    if isa.get("amx_int8"):
        return 1024, "AMX TDPBUSD"
    if isa.get("avx512_vnni"):
        if "AMD" in model and (info.get("cpu_family") or 0) < 0x1A:
            return 64, "AVX-512 VNNI, one VPDPBUSD zmm a cycle (AMD Zen 4)"
        return 128, "AVX-512 VNNI, two VPDPBUSD zmm a cycle"
    if isa.get("avx_vnni"):
        return 64, "AVX-VNNI, two VPDPBUSD ymm a cycle"
    if isa.get("avx2"):
        return 32, "AVX2 VPMADDUBSW/VPMADDWD"
    return 8, "no SIMD int8 dot product"


def int8_limit_ms(macs: float, info: dict[str, Any]) -> tuple[float, str]:
    """The time one core needs for `macs` int8 multiply-adds at its peak rate and the clock the
    OS reports (a compute bound: it ignores memory traffic and every op that is not a
    multiply-add; a core boosting above that clock is faster by the same factor)."""
    per_cycle, source = int8_macs_per_cycle(info)
    mhz = float(info.get("cpu_mhz") or 0)
    if mhz <= 0:
        return float("nan"), f"{source}; the CPU's clock is unknown"
    ms = macs / (per_cycle * mhz * 1e6) * 1e3
    return ms, f"{per_cycle} int8 MACs a cycle ({source}) at {mhz:.0f} MHz"
