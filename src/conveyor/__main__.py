"""``python -m conveyor``: the same command line as the ``conveyor`` script."""

from __future__ import annotations

from conveyor.cli.main import main

if __name__ == "__main__":
    main()
