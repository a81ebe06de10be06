"""What commands share before their bodies run: option types, values checked against the
config's types, and TensorFlow imported first."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


def config_choice(name: str) -> Callable[[Any], Any]:
    """An option callback: the value must be one of `unetq.config.<name>` (a Literal), else a
    usage error. The config is imported only when the option is parsed, so `--help` never pays
    for pydantic."""

    def check(value):
        if value is None:
            return value
        from unetq import config

        reason = config.not_one_of(value, getattr(config, name))
        if reason:
            raise typer.BadParameter(reason)
        return value

    return check


def batch_setting(value: str | None) -> str | None:
    """An option callback: a batch size or 'async' (runtimes.Setting), else a usage error."""
    if value is None:
        return value
    from unetq.errors import UnetqError
    from unetq.runtimes import Setting

    try:
        Setting.parse(value)
    except UnetqError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def needs_tensorflow(
    command: Callable | None = None,
    *,
    files: tuple[str, ...] = (),
    one_of: tuple[str, ...] = (),
    check: Callable[[dict], None] | None = None,
):
    """Import TensorFlow before the command's body runs, after its options are parsed (so
    `--help` and usage errors answer at once): in a process that also loads OpenVINO or LiteRT,
    TensorFlow's oneDNN libraries must be loaded first. The options named in `files` must be
    existing files, and exactly one of the options in `one_of` must be given: one line, before
    TensorFlow loads, when not."""

    def wrap(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **kwargs):
            from unetq.errors import ModelError, UnetqError
            from unetq.runtimes import import_tensorflow

            if one_of and sum(kwargs.get(name) is not None for name in one_of) != 1:
                names = " or ".join(f"--{name.replace('_', '-')}" for name in one_of)
                raise UnetqError(f"give exactly one of {names}")

            for name in files:
                path = kwargs.get(name)
                if path is not None and not Path(path).is_file():
                    raise ModelError(f"model file not found: {path}")
            if check is not None:
                check(kwargs)
            import_tensorflow()
            return command(*args, **kwargs)

        return run

    return wrap(command) if command is not None else wrap


DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Dataset folder (default: $UNETQ_DATA_DIR, then the cache)."),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format", help="Dataset layout: pets or folder.", callback=config_choice("DatasetFormat")
    ),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: section.key=value.")
]
PresetOpt = Annotated[str, typer.Option(help="Preset: quick, seed, smoke, nuclei or membrane.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="A TOML config over the preset.")]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder.")]
