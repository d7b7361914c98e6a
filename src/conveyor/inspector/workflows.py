"""The inspector's workflow methods (docs/workflows.md)."""

from __future__ import annotations

from conveyor.brokers.workflows import WorkflowState
from conveyor.inspector.base import MAX_PAGE_SIZE, InspectorBase, workflow_state
from conveyor.workflows.info import WorkflowInfo, load_infos
from conveyor.workflows.running import workflows_of


class WorkflowMethods(InspectorBase):
    """Workflows: one with its steps, a page of them, cancelling one."""

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """One workflow, with every step's state and result.

        Raises:
            WorkflowNotFoundError: no such workflow (never stored, or purged).
        """
        store = workflows_of(self._broker)
        return (await load_infos(store, [await store.load_workflow(workflow_id)]))[0]

    async def list_workflows(
        self, state: WorkflowState | str | None = None, page: int = 1, size: int = 50
    ) -> list[WorkflowInfo]:
        """A page (numbered from 1) of workflows, newest first, in ``state`` (default: any)."""
        wanted = None if state is None else workflow_state(state)
        size = max(0, min(size, MAX_PAGE_SIZE))
        store = workflows_of(self._broker)
        records = await store.list_workflows(wanted, offset=(max(page, 1) - 1) * size, limit=size)
        return await load_infos(store, records)

    async def cancel_workflow(self, workflow_id: str) -> bool:
        """Cancel a workflow: steps not yet started never start; running ones finish alone.

        Returns ``False`` when the workflow had already finished.

        Raises:
            WorkflowNotFoundError: no such workflow.
        """
        return await workflows_of(self._broker).cancel_workflow(workflow_id)
