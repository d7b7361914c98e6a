"""Workflows: chains, groups and chords that survive any worker crash, and resumable pipelines.

``pipeline`` runs a pipeline's steps in one task. ``canvas`` holds the values users build,
``compile`` turns one into the stored graph, ``info`` describes a stored workflow and
``running`` enqueues workflows and waits for results. The broker
side (storage and the transition rules) is :mod:`conveyor.brokers.workflows` and
:mod:`conveyor.brokers.workflow_engine`.
"""

from __future__ import annotations

from conveyor.workflows.canvas import (
    Canvas,
    Chain,
    Chord,
    Group,
    Signature,
    chain,
    chord,
    group,
    signature,
)
from conveyor.workflows.info import WorkflowInfo, WorkflowStep

__all__ = [
    "Canvas",
    "Chain",
    "Chord",
    "Group",
    "Signature",
    "WorkflowInfo",
    "WorkflowStep",
    "chain",
    "chord",
    "group",
    "signature",
]
