"""The one progress display of unetq's long loops: what, a bar, done of total (bytes and speed
for a download), time elapsed and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def make_progress(console: Console, transient: bool = False, download: bool = False) -> Progress:
    """`transient`: the bars vanish when done (a command that prints a table after them)."""
    counter = (DownloadColumn(), TransferSpeedColumn()) if download else (MofNCompleteColumn(),)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counter,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
