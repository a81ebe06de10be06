"""`python -m unetq.cli`: the `unetq` command."""

from __future__ import annotations

from unetq.cli import main

main()
