"""The ``conveyor`` command line (click). Entry point: :func:`conveyor.cli.main.main`."""

from __future__ import annotations
