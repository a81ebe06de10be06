"""Fast feedback: `unetq --help`, `unetq CMD --help` and usage errors answer before anything
heavy is imported. Each case runs the command line in a child process and lists the heavy
libraries that process had imported by the time it ended."""

import json
import subprocess
import sys

import pytest

HEAVY = {"tensorflow", "keras", "pandas", "openvino", "nncf", "ai_edge_litert", "matplotlib"}
COMMANDS = [
    ["data"],
    ["data", "fetch"],
    ["data", "check"],
    ["models"],
    ["train"],
    ["compress"],
    ["evaluate"],
    ["bench"],
    ["robustness"],
    ["recommend"],
    ["study"],
    ["benchmark"],
    ["report"],
    ["show"],
    ["predict"],
]
# The child: each argument list (JSON) through unetq.cli.main, then the exit codes and the
# heavy libraries imported by then.
CHILD = """
import json, sys
from unetq.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as end:
        codes.append(end.code)
heavy = {m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2]))
print(json.dumps([codes, sorted(heavy)]))
"""


def run_cli(*argvs: list[str]) -> tuple[list[int], list[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(argvs), json.dumps(sorted(HEAVY))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    codes, heavy = json.loads(proc.stdout.splitlines()[-1])
    return codes, heavy, proc.stderr


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["--help"], 0, ""),
        (["study", "--help"], 0, ""),
        (["study", "--bogus"], 2, "No such option: --bogus"),
        (["evaluate", "--run", "x", "--split", "nope"], 2, "'nope' is not train, val or test"),
        (["benchmark", "--model", "m.keras", "--format", "x"], 2, "'x' is not pets or folder"),
        (["data", "check", "--format", "x"], 2, "'x' is not pets, folder or auto"),
        (["predict", "--images", "i", "--out", "o"], 2, "give exactly one of --model or --run"),
        (
            ["predict", "--images", "i", "--out", "o", "--model", "m", "--run", "r"],
            2,
            "give exactly one of --model or --run",
        ),
        (
            ["predict", "--images", "i", "--out", "o", "--model", "m", "--batch", "0"],
            2,
            "batch '0' is not a number of images >= 1 or 'async'",
        ),
        (["recommend", "--run", "r", "--objective", "fast"], 2, "'fast' is not latency or"),
        (
            ["benchmark", "--model", __file__, "--input-norm", "torch"],
            2,
            "--input-norm 'torch' is not one of unit, tf, raw, imagenet, caffe",
        ),
        (
            ["benchmark", "--model", __file__, "--mean", "0.5,0.5,0.5"],
            2,
            "give --mean and --std together",
        ),
        (["benchmark", "--model", __file__, "--threshold", "2"], 2, "is not between 0 and 1"),
    ],
)
def test_help_and_usage_errors_import_nothing_heavy(argv, code, says):
    codes, heavy, stderr = run_cli(argv)
    assert codes == [code], stderr
    assert says in stderr
    assert heavy == []


def test_every_commands_help_imports_nothing_heavy():
    codes, heavy, stderr = run_cli(*[[*command, "--help"] for command in COMMANDS])
    assert codes == [0] * len(COMMANDS), stderr
    assert heavy == []


def test_errors_and_config_import_without_pandas():
    code = "import json, sys, unetq.errors, unetq.config; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert HEAVY.isdisjoint(m.split(".")[0] for m in json.loads(out.stdout))
