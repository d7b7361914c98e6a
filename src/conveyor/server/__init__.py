"""``conveyor server``: a task server speaking masenko's and Faktory's protocols over a broker."""

from __future__ import annotations

from conveyor.server.config import Endpoint, ServerConfig
from conveyor.server.core import TaskServer

__all__ = ["Endpoint", "ServerConfig", "TaskServer"]
