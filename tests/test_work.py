"""unetq.work: when a unit is done, and the one loop every stage runs (skip, groups, failures,
interruption, worker processes), on a toy stage that writes text files."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from unetq.errors import UnetqError
from unetq.work import Stage, Unit, groups_of, is_done, left, read_record, run_stage, write_record


def unit(tmp_path: Path, name: str = "a", inputs=None, group: str = "") -> Unit:
    out = tmp_path / f"{name}.txt"
    return Unit((name,), tmp_path / f"{name}.json", inputs or {"x": 1}, (out,), group)


def test_a_unit_is_done_only_with_its_record_the_same_inputs_and_intact_outputs(tmp_path):
    u = unit(tmp_path, inputs={"digest": "abc", "settings": {"n": 3}})
    assert not is_done(u)  # nothing written
    u.outputs[0].write_text("result")
    assert not is_done(u)  # outputs without a record: interrupted before the record
    write_record(u, note="kept")
    assert is_done(u) and read_record(u)["note"] == "kept"
    assert json.loads(u.record.read_text())["outputs"] == {"a.txt": 6}

    other = Unit(u.key, u.record, {"digest": "abd", "settings": {"n": 3}}, u.outputs)
    assert not is_done(other)  # computed from something else
    u.outputs[0].write_text("resul")  # truncated behind the record's back
    assert not is_done(u)
    u.outputs[0].unlink()
    assert not is_done(u)
    u.record.write_text("{not json")
    assert not is_done(u)


def test_inputs_compare_as_they_read_back_from_json(tmp_path):
    u = Unit(("k",), tmp_path / "k.json", {"hw": (96, 96), "n": None, 3: 0.1})
    write_record(u)
    assert is_done(Unit(("k",), tmp_path / "k.json", {"hw": [96, 96], "n": None, "3": 0.1}))


def test_groups_keep_their_first_order_and_ungrouped_units_stand_alone(tmp_path):
    units = [
        unit(tmp_path, "a", group="m1"),
        unit(tmp_path, "b", group="m2"),
        unit(tmp_path, "c", group="m1"),
        unit(tmp_path, "d"),
    ]
    assert [[u.key[0] for u in g] for g in groups_of(units)] == [["a", "c"], ["b"], ["d"]]


@dataclass
class Toy(Stage):
    """Writes `<name>.txt`; fails (UnetqError) on names in `fail`, raises KeyboardInterrupt on
    `stop`, and counts what it computed."""

    root: Path
    names: list[str]
    groups: dict[str, str] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    stop: str = ""
    ran: list[str] = field(default_factory=list)

    name = "toy"

    def units(self):
        return [
            Unit(
                (n,),
                self.root / f"{n}.json",
                {"v": 1},
                (self.root / f"{n}.txt",),
                self.groups.get(n, ""),
            )
            for n in self.names
        ]

    def run(self, group, progress=None):
        for u in group:
            name = u.key[0]
            if name == self.stop:
                raise KeyboardInterrupt
            if name in self.fail:
                raise UnetqError(f"{name} cannot be made")
            u.outputs[0].write_text(name)
            self.ran.append(name)
            write_record(u)

    def merge(self, units, failures):
        return {
            u.key[0]: (u.outputs[0].read_text() if is_done(u) else failures[u.key]) for u in units
        }


def test_run_stage_skips_done_units_and_redo_runs_them_all(tmp_path):
    stage = Toy(tmp_path, ["a", "b", "c"])
    assert run_stage(stage) == {"a": "a", "b": "b", "c": "c"}
    assert stage.ran == ["a", "b", "c"]
    (tmp_path / "b.txt").unlink()
    stage.ran.clear()
    run_stage(stage)
    assert stage.ran == ["b"]
    stage.ran.clear()
    run_stage(stage, redo=True)
    assert stage.ran == ["a", "b", "c"]


def test_a_failed_group_of_a_tolerant_stage_is_passed_to_merge_and_the_others_go_on(tmp_path):
    stage = Toy(tmp_path, ["a", "b", "c"], groups={"a": "g1", "b": "g1"}, fail={"b"})
    with pytest.raises(UnetqError, match="b cannot be made"):
        run_stage(stage)  # not tolerant: the error ends the stage
    assert is_done(stage.units()[0]) and not (tmp_path / "c.json").exists()

    stage.tolerant = True
    result = run_stage(stage)
    assert result == {"a": "a", "b": "b cannot be made", "c": "c"}  # its group failed with it
    assert left(stage.units())[0].key == ("b",)


def test_an_interrupted_stage_keeps_finished_units_and_the_rerun_does_the_rest(tmp_path):
    stage = Toy(tmp_path, ["a", "b", "c"], stop="b")
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage)
    assert [u.key for u in left(stage.units())] == [("b",), ("c",)]
    stage.stop, stage.ran = "", []
    run_stage(stage)
    assert stage.ran == ["b", "c"]


def test_groups_run_in_worker_processes_and_come_back_as_records(tmp_path):
    stage = Toy(tmp_path, ["a", "b", "c"], groups={"a": "g1", "b": "g2", "c": "g3"}, fail={"c"})
    stage.workers, stage.tolerant = 2, True
    result = run_stage(stage)
    assert result == {"a": "a", "b": "b", "c": "c cannot be made"}
    assert stage.ran == []  # the work was done in the workers, not here


def test_a_progress_bar_counts_the_units_found_done(tmp_path):
    from io import StringIO

    from rich.console import Console

    from unetq.progress import make_progress

    Toy(tmp_path, ["a"]).run(Toy(tmp_path, ["a"]).units())
    out = StringIO()
    with make_progress(Console(file=out, width=120)) as progress:
        run_stage(Toy(tmp_path, ["a", "b"]), progress)
    assert "toy: 1 of 2 computed, 1 up to date" in out.getvalue()
