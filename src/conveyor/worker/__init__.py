"""The worker: :class:`~conveyor.worker.server.Server` and the loops it runs.

Import from the submodules (``conveyor.worker.server.Server``,
``conveyor.worker.context.TaskContext``) or from the top-level ``conveyor`` package. This package
re-exports nothing, so ``conveyor.middleware`` can import the context without an import cycle.
"""

from __future__ import annotations
