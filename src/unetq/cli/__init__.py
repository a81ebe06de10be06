"""The `unetq` command line: the Typer app and its one error boundary, `main`.

A command parses its options, calls the stage modules and prints through `unetq.cli.output`;
it holds no logic. Commands import their stage inside their body and TensorFlow after parsing
(`options.needs_tensorflow`), so `unetq --help`, `unetq CMD --help` and usage errors answer
without loading TensorFlow, pandas or the runtimes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import typer
from rich.text import Text

from unetq.cli import build, data, inside, measure, study
from unetq.cli.output import err_console
from unetq.errors import Interrupted, UnetqError, storage_error

# TensorFlow's C++ chatter (grappler remapper notes, cpu features) and its Python retracing
# warnings are not for our users; real failures still raise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
logging.getLogger("tensorflow").setLevel(logging.ERROR)

app = typer.Typer(
    help="Train U-Net segmentation models, quantize them, and measure the trade-offs on CPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for group in (build, measure, inside, study, data):
    group.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point and the one error boundary of the command line.

    Usage errors print the usage and exit 2; errors a user can cause (data, models, config) one
    line and exit 2; a write the disk refuses one line naming the path, exit 1; Ctrl-C (or
    SIGTERM) one `interrupted:` line, exit 130 (143), finished work kept. A bug in unetq keeps
    its traceback. Nothing here depends on how typer or click are packaged: typer swallows
    KeyboardInterrupt in some releases, so signals raise unetq's own `Interrupted` instead.
    """
    catch_signals()
    try:
        result = app(args=argv, standalone_mode=False)
    except (Interrupted, KeyboardInterrupt) as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        what = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        _fail(f"interrupted ({what}): finished work is saved; rerun the same command to resume")
        sys.exit(code)
    except UnetqError as exc:
        _fail(str(exc), label="error: ")
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _is_usage_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":  # end of input at a prompt
            sys.exit(1)
        storage = storage_error(exc)
        if storage is None:
            raise
        _fail(str(storage), label="error: ")
        sys.exit(storage.exit_code)
    sys.exit(result if isinstance(result, int) else 0)


def catch_signals() -> None:
    """SIGINT and SIGTERM raise Interrupted in the main thread (child processes see their own)."""

    def interrupt(signum, frame):
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _is_usage_error(exc: BaseException) -> bool:
    """click's (or typer's vendored click's) usage errors: they know their exit code and output."""
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "show", None))


def _fail(message: str, label: str = "") -> None:
    err_console.print(Text.assemble((label, "bold red"), message), soft_wrap=True)
