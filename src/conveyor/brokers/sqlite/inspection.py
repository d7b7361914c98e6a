"""The inspector's transactions: listings, counts, and operations on tasks by id or by state.

They run on the broker's database thread like :mod:`.store`, one transaction each.
"""

from __future__ import annotations

import logging

from conveyor.brokers.sqlite import rows, throughput, workflow_steps
from conveyor.brokers.sqlite.queries import queries
from conveyor.brokers.sqlite.store import Store, utc_day
from conveyor.brokers.sqlite.workers import forget_cancels
from conveyor.errors import BrokerError, QueueInUseError, QueueNotEmptyError, TaskNotFoundError
from conveyor.message import QueueStats, TaskInfo, TaskState

logger = logging.getLogger(__name__)

Q = queries()

_RUNNABLE = frozenset({TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED})
_ARCHIVABLE = rows.WAITING


def _not_found(queue: str, task_id: str, why: str = "") -> TaskNotFoundError:
    return TaskNotFoundError(
        f"no task {task_id!r} in queue {queue!r}{why}", task_id=task_id, queue=queue
    )


def list_queues(store: Store) -> list[str]:
    """Every queue ever enqueued to or paused, sorted."""
    return [r[0] for r in store.fetch(Q["list_queues"], text=(0,))]


def queue_stats(store: Store, queue: str) -> QueueStats:
    """Counts by state, the paused flag and today's (UTC, broker clock) totals."""
    with store.read() as now:
        by_state: dict[str, int] = dict(store.fetch(Q["count_by_state"], (queue,), text=(0,)))
        paused = store.conn.execute(Q["queue_paused"], (queue,)).fetchone()
        totals = store.conn.execute(Q["day_counts"], (queue, utc_day(now))).fetchone() or (0, 0)
    return QueueStats(
        queue=queue,
        pending=by_state.get(TaskState.PENDING.value, 0),
        scheduled=by_state.get(TaskState.SCHEDULED.value, 0),
        active=by_state.get(TaskState.ACTIVE.value, 0),
        retry=by_state.get(TaskState.RETRY.value, 0),
        archived=by_state.get(TaskState.ARCHIVED.value, 0),
        completed=by_state.get(TaskState.COMPLETED.value, 0),
        paused=bool(paused and paused[0]),
        processed_today=totals[0],
        failed_today=totals[1],
    )


def list_tasks(
    store: Store, queue: str, state: TaskState, offset: int, limit: int
) -> list[TaskInfo]:
    """A page of tasks in ``state``: waiting ones by ready time, others by time entered.

    A row that cannot be decoded is left out (and logged); ``claim`` archives it when it is
    waiting, with the reason. Stored text that is not UTF-8 is shown with U+FFFD.
    """
    query = Q["list_waiting"] if state in rows.WAITING else Q["list_settled"]
    infos = []
    for row in store.fetch(query, (queue, state.value, max(limit, 0), max(offset, 0))):
        try:
            infos.append(rows.task_info(row))
        except rows.UndecodableRowError as exc:
            logger.warning(
                "left an undecodable task out of a listing: %s",
                exc,
                extra={"task_id": row[rows.ID], "queue": queue},
            )
    return infos


def _find(store: Store, queue: str, task_id: str) -> tuple[int, TaskInfo]:
    found = store.fetch(Q["get_task"], (queue, task_id))
    if not found:
        raise _not_found(queue, task_id)
    row = found[0]
    try:
        return row[rows.SEQ], rows.task_info(row)
    except rows.UndecodableRowError as exc:
        raise BrokerError(f"task {task_id!r} in queue {queue!r} cannot be decoded: {exc}") from None


def get_task(store: Store, queue: str, task_id: str) -> TaskInfo:
    """One task (raises TaskNotFoundError, or BrokerError for an undecodable row)."""
    return _find(store, queue, task_id)[1]


def delete_task(store: Store, queue: str, task_id: str) -> None:
    """Delete a task that is not ACTIVE, releasing its unique lock."""
    with store.write() as now:
        seq, info = _find(store, queue, task_id)
        if info.state is TaskState.ACTIVE:
            raise _not_found(queue, task_id, " that can be deleted (it is active)")
        if info.unique_key is not None:
            store.conn.execute(Q["release_task_lock"], (seq,))
        store.conn.execute(Q["delete_task"], (seq,))
        step = workflow_steps.step_deleted(store, task_id, now)  # a step: its workflow fails
    if step:  # its error callbacks may wait
        store.notify_ready()


def run_task(store: Store, queue: str, task_id: str) -> None:
    """Make a SCHEDULED, RETRY or ARCHIVED task PENDING, ready now."""
    with store.write() as now:
        seq, info = _find(store, queue, task_id)
        if info.state not in _RUNNABLE:
            raise _not_found(queue, task_id, f" that can be run (it is {info.state})")
        store.conn.execute(Q["make_pending"], (now, seq))
    store.notify_ready()


def archive_task(store: Store, queue: str, task_id: str) -> None:
    """Move a PENDING, SCHEDULED or RETRY task to ARCHIVED."""
    with store.write() as now:
        seq, info = _find(store, queue, task_id)
        if info.state not in _ARCHIVABLE:
            raise _not_found(queue, task_id, f" that can be archived (it is {info.state})")
        store.conn.execute(Q["make_archived"], (now, seq))
        step = workflow_steps.step_archived(store, task_id, info.last_error, now)
    if step:  # its error callbacks may wait
        store.notify_ready()


def delete_tasks(store: Store, queue: str, state: TaskState) -> int:
    """Delete every task in ``state`` (0 for ACTIVE), releasing their unique locks."""
    if state is TaskState.ACTIVE:
        return 0
    with store.write() as now:
        steps = workflow_steps.steps_in(store, queue, state.value)
        store.conn.execute(Q["release_locks_in_state"], (queue, state.value))
        deleted: int = store.conn.execute(Q["delete_in_state"], (queue, state.value)).rowcount
        for task_id, _ in steps:  # their workflows fail in the same transaction
            workflow_steps.step_deleted(store, task_id, now)
    if steps:
        store.notify_ready()
    return deleted


def run_tasks(store: Store, queue: str, state: TaskState) -> int:
    """Make every task in a SCHEDULED, RETRY or ARCHIVED ``state`` PENDING; 0 for others."""
    if state not in _RUNNABLE:
        return 0
    with store.write() as now:
        changed = store.conn.execute(Q["make_pending_in_state"], (now, queue, state.value)).rowcount
    if changed:
        store.notify_ready()
    return changed


def archive_tasks(store: Store, queue: str, state: TaskState) -> int:
    """Archive every task in a PENDING, SCHEDULED or RETRY ``state``; 0 for others."""
    if state not in _ARCHIVABLE:
        return 0
    with store.write() as now:
        steps = workflow_steps.steps_in(store, queue, state.value)
        changed: int = store.conn.execute(
            Q["make_archived_in_state"], (now, queue, state.value)
        ).rowcount
        for task_id, error in steps:  # their workflows fail in the same transaction
            workflow_steps.step_archived(store, task_id, error, now)
    if steps:
        store.notify_ready()
    return changed


def set_paused(store: Store, queue: str, paused: bool) -> None:
    """Pause or unpause a queue (remembering its name); unpausing wakes waiters."""
    with store.write():
        store.conn.execute(Q["set_paused"], (queue, int(paused)))
    if not paused:
        store.notify_ready()


def delete_queue(store: Store, queue: str, force: bool) -> None:
    """Remove a queue with its tasks, unique locks, daily totals and pause flag, in one
    transaction (a no-op for an unknown queue). Fencing tokens come from the broker-wide
    counter, which stays.

    Raises:
        QueueNotEmptyError: ``force`` is false and the queue holds a task in any state.
        QueueInUseError: a task is ACTIVE (leased by a worker).
    """
    with store.write() as now:
        by_state: dict[str, int] = dict(store.fetch(Q["count_by_state"], (queue,), text=(0,)))
        total = sum(by_state.values())
        if total and not force:
            raise QueueNotEmptyError(queue=queue, tasks=total)
        active = by_state.get(TaskState.ACTIVE.value, 0)
        if active:
            raise QueueInUseError(queue=queue, active=active)
        steps = workflow_steps.steps_in(store, queue, None)
        store.conn.execute(Q["delete_queue_tasks"], (queue,))
        store.conn.execute(Q["delete_queue_locks"], (queue,))
        store.conn.execute(Q["delete_queue_counts"], (queue,))
        throughput.forget_queue(store.conn, queue)
        store.conn.execute(Q["delete_queue_entry"], (queue,))
        forget_cancels(store, queue)
        # Their workflows fail in the same transaction, once the queue is gone: an error
        # callback that runs in this queue starts it afresh, as a later enqueue would.
        for task_id, _ in steps:
            workflow_steps.step_deleted(store, task_id, now)
    if steps:
        store.notify_ready()
