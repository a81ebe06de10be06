"""Resident-set readings of this process (numpy-free: the benchmark probe imports it)."""

from __future__ import annotations

import sys

MB = 1024 * 1024  # memory is reported in MiB, called MB in column names


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; fallback ru_maxrss) in MB."""
    value = _status_mb("VmHWM")
    if value is not None:
        return value
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MB if sys.platform == "darwin" else maxrss / 1024.0  # bytes vs kB


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (Linux clear_refs); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
