"""What every part of the inspector shares: the broker it holds and the argument checks."""

from __future__ import annotations

from conveyor.broker_handle import BrokerHandle
from conveyor.brokers.limits import FlowControl, Overflow
from conveyor.brokers.protocol import Broker
from conveyor.brokers.workers import WorkerRegistry
from conveyor.brokers.workflows import WorkflowState
from conveyor.errors import BrokerError, ConfigError
from conveyor.message import TaskState, validate_name

MAX_PAGE_SIZE = 1000
"""The largest page ``list_tasks`` returns: bounds memory however large a queue grows."""


def task_state(state: TaskState | str) -> TaskState:
    """``state`` as a :class:`TaskState`; ``ConfigError`` naming the states otherwise."""
    try:
        return TaskState(state)
    except ValueError:
        names = ", ".join(s.value for s in TaskState)
        raise ConfigError(f"unknown task state {state!r}: must be one of {names}") from None


def workflow_state(state: WorkflowState | str) -> WorkflowState:
    """``state`` as a :class:`WorkflowState`; ``ConfigError`` naming the states otherwise."""
    try:
        return WorkflowState(state)
    except ValueError:
        names = ", ".join(s.value for s in WorkflowState)
        raise ConfigError(f"unknown workflow state {state!r}: must be one of {names}") from None


_OVERFLOWS: dict[str, Overflow] = {"reject": "reject", "drop_oldest": "drop_oldest"}


def overflow_policy(value: str) -> Overflow:
    """``value`` as a queue limit's overflow policy; ``ConfigError`` otherwise."""
    if value in _OVERFLOWS:
        return _OVERFLOWS[value]
    raise ConfigError(f"overflow must be 'reject' or 'drop_oldest', not {value!r}")


def queue_name(queue: str) -> str:
    """``queue`` checked as a queue name (``InvalidNameError`` otherwise)."""
    return validate_name(queue, what="queue name")


def worker_registry(broker: Broker) -> WorkerRegistry:
    """``broker`` as a worker registry; ``BrokerError`` for one that keeps none."""
    if not isinstance(broker, WorkerRegistry):
        raise BrokerError(f"{type(broker).__name__} keeps no worker registry")
    return broker


class InspectorBase(BrokerHandle):
    """The broker the inspector's parts use, and its flow-control side."""

    def _flow(self) -> FlowControl:
        if not isinstance(self._broker, FlowControl):
            raise ConfigError(f"{type(self._broker).__name__} does not keep flow-control limits")
        return self._broker
