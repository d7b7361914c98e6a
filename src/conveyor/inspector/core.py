"""``AsyncInspector``: the async inspector, its methods gathered from one module per concern."""

from __future__ import annotations

from conveyor.brokers.protocol import Broker, BrokerInfo
from conveyor.config import DEFAULT_BROKER_URL, broker_url_from_env
from conveyor.inspector.limits import LimitMethods
from conveyor.inspector.queues import QueueMethods
from conveyor.inspector.schedules import ScheduleMethods
from conveyor.inspector.tasks import TaskMethods
from conveyor.inspector.workers import WorkerMethods
from conveyor.inspector.workflows import WorkflowMethods


class AsyncInspector(
    QueueMethods, TaskMethods, LimitMethods, WorkerMethods, ScheduleMethods, WorkflowMethods
):
    """Inspects and manages queues and tasks from async code.

    Args:
        broker: a broker URL or a Broker instance (an instance is not closed by the inspector).

    Raises:
        ConfigError: a bad URL (without its password).
    """

    def __init__(self, broker: str | Broker = DEFAULT_BROKER_URL) -> None:
        super().__init__(broker)

    @classmethod
    def from_env(cls) -> AsyncInspector:
        """An inspector for ``$CONVEYOR_BROKER_URL`` (default ``sqlite:///conveyor.db``)."""
        return cls(broker_url_from_env())

    def __repr__(self) -> str:
        return f"AsyncInspector({self._label!r})"

    async def describe(self) -> BrokerInfo:
        """The broker's backend, location (password redacted), durability and warnings."""
        return await self._broker.describe()
