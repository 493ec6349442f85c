"""The one place where library errors become command-line errors (shared by acfd-train and acfd-scan)."""

from __future__ import annotations

from typing import Any

import click

from .errors import AcfdError


class AcfdGroup(click.Group):
    """A click group that reports any :class:`AcfdError` as one line (a ClickException, exit status 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AcfdError as e:
            raise click.ClickException(str(e)) from e
