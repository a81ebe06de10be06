"""Compare two runs' CSVs apart from the columns that measure time or memory (used by tests)."""

from pathlib import Path

import numpy as np
import pandas as pd

CSVS = [
    "trained_models_info.csv",
    "compressed_models_info.csv",
    "model_performance_individual_results.csv",
    "model_performance_average_results.csv",
    "robustness.csv",
]
# Columns that measure time or memory differ between any two runs; everything else must match.
TIMING_WORDS = (
    "time",
    "second",
    "latency",
    "ms_",
    "rss",
    "memory",
    "images_per_s",
    "load_av",
    "speedup",
    "limit",  # from the peaks measured on this machine at run time
    "throughput",  # every throughput column, the best setting too, is chosen by timing
)


def measures_time_or_memory(column: str) -> bool:
    return column != "runtime" and any(w in column.lower() for w in TIMING_WORDS)


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in df.columns if not measures_time_or_memory(c) and c != "path"]
    keys = [
        c
        for c in ("model_id", "variant", "runtime", "threads", "image", "condition", "severity")
        if c in keep
    ]
    return df[keep].sort_values(keys).reset_index(drop=True)


def assert_same_results(expected_dir: Path, got_dir: Path) -> None:
    """Every result CSV of got_dir equals expected_dir's, timing and memory columns aside."""
    for name in CSVS:
        expected = comparable(pd.read_csv(Path(expected_dir) / name))
        got = comparable(pd.read_csv(Path(got_dir) / name))
        assert list(got.columns) == list(expected.columns), name
        assert len(got) == len(expected), name
        for col in expected.columns:
            if pd.api.types.is_numeric_dtype(expected[col]):
                np.testing.assert_allclose(
                    got[col], expected[col], rtol=1e-5, atol=1e-6, err_msg=f"{name}:{col}"
                )
            else:
                assert got[col].tolist() == expected[col].tolist(), f"{name}:{col}"
