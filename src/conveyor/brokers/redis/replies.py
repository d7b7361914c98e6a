"""Plain functions around the broker's scripts: checking names before they are sent, and turning
replies into conveyor's values and errors. Apart from the broker classes so those read as steps.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from conveyor.brokers.redis.records import decode_claimed, enqueued_infos, new_lease
from conveyor.errors import (
    DuplicateTaskError,
    QueueFullError,
    TaskIdConflictError,
    TaskNotFoundError,
)
from conveyor.message import NAME_PATTERN, Lease, TaskInfo, TaskMessage, validate_name

# The logger the broker had as one module: every part of it logs under that name.
logger = logging.getLogger("conveyor.brokers.redis.broker")


def as_bytes(value: bytes | str) -> bytes:
    """Replies are bytes (decode_responses is off); the str branch only satisfies the types."""
    return value if isinstance(value, bytes) else value.encode()


# Names, one per line: one regex pass checks a whole batch (NAME_PATTERN excludes newlines).
_NAME_LINES = re.compile(rf"(?:{NAME_PATTERN.pattern}\n)*")


_FULL_NAME = NAME_PATTERN.fullmatch


def all_names(values: Sequence[str]) -> bool:
    """True when every value is a valid name (False may also mean: look at each one)."""
    if len(values) == 1:  # the usual single task: one match, no joined text
        value = values[0]
        return isinstance(value, str) and _FULL_NAME(value) is not None
    try:
        text = "\n".join(values) + "\n"
    except TypeError:  # not all strings
        return False
    # A newline inside a value would split it into valid-looking lines: count them.
    return text.count("\n") == len(values) and _NAME_LINES.fullmatch(text) is not None


def check_names(messages: Sequence[TaskMessage]) -> None:
    """Refuse bad ids and types before anything is stored (enqueue.lua relies on valid ids)."""
    if not messages:
        return
    if all_names([m.id for m in messages]) and all_names([m.type for m in messages]):
        return
    for m in messages:  # find the first bad name, for validate_name's error
        validate_name(m.id, what="task id")
        validate_name(m.type, what="task type")


def queue_groups(messages: Sequence[TaskMessage]) -> list[list[int]]:
    """Message positions per queue, queues in first-seen order (Cluster: one script each)."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(messages):
        groups.setdefault(m.queue, []).append(i)
    return list(groups.values())


def in_order(groups: Sequence[Sequence[int]], outcomes: Sequence[list[TaskInfo]]) -> list[TaskInfo]:
    """Infos back in message order from per-group results (positions as queue_groups gives)."""
    if len(groups) == 1:
        return outcomes[0]
    infos: dict[int, TaskInfo] = {}
    for chosen, outcome in zip(groups, outcomes, strict=True):
        infos.update(zip(chosen, outcome, strict=True))
    return [infos[i] for i in range(len(infos))]


def enqueue_outcomes(
    groups: Sequence[Sequence[TaskMessage]], reply: Any
) -> list[list[TaskInfo] | Exception]:
    """Each call's infos, or its refusal, from an enqueue.lua reply."""
    now_us = int(reply[0])
    outcomes: list[list[TaskInfo] | Exception] = []
    for group, result in zip(groups, reply[1:], strict=True):
        if result[0] == b"ok":
            outcomes.append(enqueued_infos(group, result[1], now_us))
        else:
            outcomes.append(refusal_error(result[0], group[int(result[1]) - 1]))
    return outcomes


def refusal_error(code: bytes, m: TaskMessage) -> Exception:
    if code == b"full":
        return QueueFullError(
            f"queue {m.queue!r} is full (its length limit is reached)", task_id=m.id, queue=m.queue
        )
    if code == b"duplicate":
        return DuplicateTaskError(
            f"unique key {m.unique_key!r} is held in queue {m.queue!r}",
            task_id=m.id,
            queue=m.queue,
        )
    return TaskIdConflictError(
        f"task {m.id!r} already exists in queue {m.queue!r}", task_id=m.id, queue=m.queue
    )


def not_found(queue: str, task_id: str, why: str = "") -> TaskNotFoundError:
    return TaskNotFoundError(
        f"no task {task_id!r} in queue {queue!r}{why}", task_id=task_id, queue=queue
    )


def claim_script_args(limit: int, lease_s: float) -> list[int]:
    """claim.lua's ARGV."""
    return [limit, round(lease_s * 1_000_000)]


def claimed_leases(names: Sequence[str], reply: Any) -> list[Lease]:
    """The leases in a claim.lua reply (``names``: the queues of its KEYS blocks, in order).

    Corrupt records the script archived on the way are logged here.
    """
    expires_at = int(reply[1]) / 1_000_000
    for qi, raw_id, reason in reply[2]:
        task_id, queue = raw_id.decode(errors="replace"), names[int(qi) - 1]
        logger.error(
            "archived corrupt task record %r in queue %r: %s",
            task_id,
            queue,
            reason.decode(errors="replace"),
            extra={"task_id": task_id, "queue": queue},
        )
    leases = []
    for entry in reply[3:]:
        qi, raw_id, token, values = entry[:4]  # a workflow step's record may follow (claim.lua)
        queue = names[int(qi) - 1]
        try:
            info = decode_claimed(queue, raw_id.decode(), values)
        except (UnicodeDecodeError, ValueError, OverflowError, OSError) as exc:
            # claim.lua checks what decoding needs, so this is a last guard: one record must not
            # cost its batch. The task stays ACTIVE in the active set with its lease; recovery
            # retries it and, past the crash limit, archives it with a reason.
            task_id = raw_id.decode(errors="replace")
            logger.error(
                "claimed task %r in queue %r cannot be decoded (left to lease recovery): %s",
                task_id,
                queue,
                exc,
                extra={"task_id": task_id, "queue": queue},
            )
            continue
        leases.append(new_lease(info, int(token), expires_at))
    return leases
