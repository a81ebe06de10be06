"""`unetq study --dry-run`: units of work and their estimated cost, nothing run or written."""

import pytest

from runhelp import run_cli
from unetq.config import build_config
from unetq.plan import Plan, TrainingUnit, make_plan


def plan_of(seconds: list[float]) -> Plan:
    units = [TrainingUnit(f"r{i}", 8, 1.0, 3, 10, s) for i, s in enumerate(seconds)]
    return Plan("d", 10, 2, 2, units, 2 * len(units), 0, 0, 0, 0, 1e-3, 1.0)


def test_workers_take_the_longest_run_or_an_even_share():
    plan = plan_of([10, 6, 5, 4, 3])
    assert plan.training_seconds == 28
    assert plan.makespan(1) == 28
    assert plan.makespan(2) == 14  # 10+4 | 6+5+3
    assert plan.makespan(16) == 10  # nothing beats the longest run


def test_the_plan_counts_the_smoke_grid_and_scales_by_multiply_adds(monkeypatch, tmp_path):
    monkeypatch.setenv("UNETQ_CACHE_DIR", str(tmp_path))
    # the timing probe runs in the command-line test below; here 1 ms per GMAC
    monkeypatch.setattr("unetq.plan.probe_seconds_per_gmac", lambda cfg, classes: (1e-3, 0.0))
    cfg = build_config("smoke", sets=["train.filters=[4, 8]", "train.epochs=[2, 3]"])
    plan = make_plan(cfg)
    assert [u.run_id for u in plan.training] == [
        "xception-f4-bn", "xception-f4-nobn", "xception-f8-bn", "xception-f8-nobn",
    ]  # fmt: skip
    assert plan.models == 8 and plan.train_images == int(0.8 * cfg.data.synthetic_count)
    assert plan.conversions == 8 * (len(cfg.compress.variants) - 1)
    assert plan.measurements == 8 * len(cfg.compress.variants) * len(cfg.bench.threads)
    small, large = plan.training[0], plan.training[2]
    assert large.gmacs > 2 * small.gmacs
    # 3 epochs of 3 x GMAC x training images, plus one forward pass per validation image
    expected = 3 * (3 * small.gmacs * plan.train_images + small.gmacs * plan.val_images) * 1e-3
    assert small.seconds == pytest.approx(expected)
    assert large.seconds / small.seconds == pytest.approx(large.gmacs / small.gmacs)


@pytest.mark.slow  # times real training steps in a child process
def test_dry_run_prints_the_estimate_and_writes_nothing(cache_env, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["study", "--preset", "smoke", "--dry-run", "--out", out], env=cache_env)
    assert "training run" in proc.stdout and "CPU-hours" in proc.stdout
    assert "worker(s)" in proc.stdout
    assert not out.exists()
