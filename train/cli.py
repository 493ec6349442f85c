"""`acfd-train`: a thin click layer over the training library. Each command calls one library function."""

from __future__ import annotations

import click
from acfd.schemas.cli import AcfdGroup


@click.group(cls=AcfdGroup)
@click.version_option(package_name="acfd")
def main() -> None:
    """Build data, train, evaluate and export the anti-compression forgery detector."""
