"""The `unetq` command line: parse, call the stage modules, print. No logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from unetq.errors import UnetqError

app = typer.Typer(
    help="Train U-Net segmentation models, quantize them, and measure the trade-offs on CPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Get and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Dataset folder (default: $UNETQ_DATA_DIR, then the cache)."),
]
FormatOpt = Annotated[str, typer.Option("--format", help="Dataset layout: pets or folder.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: section.key=value.")
]


# --- data commands ---


# --- models and train commands ---


# --- compress commands ---


# --- evaluate and bench commands ---


# --- study, report, show, predict commands ---


def main() -> None:
    """Entry point: user errors end as one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except UnetqError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished work is saved; rerun the same command to resume.")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
