"""What the client and the inspector share: holding a broker, and the sync facades over them.

A broker given as a URL is opened, owned and closed by its holder; a Broker instance is borrowed
and left open. The sync facades drive their async twin on a :class:`PrivateLoop`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Generic, Self, TypeVar

from conveyor.brokers import open_broker
from conveyor.brokers.protocol import Broker
from conveyor.config import redact_url
from conveyor.private_loop import PrivateLoop


def resolve_broker(broker: str | Broker) -> tuple[Broker, bool, str]:
    """Open ``broker`` if it is a URL; return the broker, whether we own it, and a safe label.

    Raises:
        ConfigError: (a ``ValueError``) for a malformed or unsupported URL, without the password.
        TypeError: ``broker`` is neither a URL nor a Broker.
    """
    if isinstance(broker, str):
        return open_broker(broker), True, redact_url(broker)
    if isinstance(broker, Broker):
        return broker, False, type(broker).__name__
    raise TypeError(f"broker must be a URL string or a Broker, not {type(broker).__name__}")


class BrokerHandle:
    """Base of the async client and inspector: holds a broker, owned when opened from a URL."""

    def __init__(self, broker: str | Broker) -> None:
        self._broker, self._owns_broker, self._label = resolve_broker(broker)
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        """Close the broker if it was opened from a URL (a borrowed one stays open). Idempotent."""
        if not self._closed:
            self._closed = True
            if self._owns_broker:
                await self._broker.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


H = TypeVar("H", bound=BrokerHandle)


class SyncFacade(Generic[H]):
    """Base of the sync ``Client`` and ``Inspector``: runs their async twin on a private loop."""

    def __init__(self, handle: H, loop_name: str) -> None:
        self._async = handle
        self._loop = PrivateLoop(loop_name)

    def close(self) -> None:
        """Close the broker (if it was opened from a URL) and the private loop. Idempotent."""
        try:
            if not self._async.closed:
                self._loop.run(self._async.close())
        finally:
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
