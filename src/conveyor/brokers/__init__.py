"""Storage backends behind one protocol; :func:`open_broker` picks one by URL scheme.

Backends are imported lazily, so using SQLite never imports redis and vice versa.
"""

from __future__ import annotations

from conveyor.brokers.protocol import Broker, BrokerInfo, Capabilities
from conveyor.config import split_broker_url

__all__ = ["Broker", "BrokerInfo", "Capabilities", "open_broker"]


def open_broker(url: str) -> Broker:
    """Create the broker a URL names. Connections are made lazily, on first use.

    Supported forms: ``memory://[name]``, ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock``,
    ``redis+sentinel://host1:26379,host2:26379/service/db``, ``redis+cluster://host:port``, and
    ``rediss+sentinel://...`` and ``rediss+cluster://...`` (TLS). Redis URLs take
    ``?namespace=name`` (default ``conveyor``).

    Raises:
        ConfigError: (a ``ValueError``) for a malformed URL or unknown scheme, without the password.
    """
    scheme = split_broker_url(url).scheme
    if scheme == "memory":
        from conveyor.brokers.memory import MemoryBroker

        return MemoryBroker.from_url(url)
    if scheme == "sqlite":
        from conveyor.brokers.sqlite import SqliteBroker

        return SqliteBroker.from_url(url)
    from conveyor.brokers.redis import RedisBroker

    return RedisBroker.from_url(url)
