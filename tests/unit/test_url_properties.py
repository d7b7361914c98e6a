"""Property test of the broker-URL boundary: any text in, a ConfigError or a broker out.

Hypothesis builds URLs from the real schemes with random host, port, path and query parts and
a known password. Whatever it builds, opening a broker (which parses but connects lazily) either
succeeds or raises ``ConfigError`` (a ``ValueError``), and the password never shows in the error
or in the broker's repr.
"""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.brokers import open_broker
from conveyor.config import KNOWN_SCHEMES, redact_url
from conveyor.errors import ConfigError

SECRET = "Zq7s3cretPW"
text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
port = st.one_of(st.just(""), st.integers(-5, 70000).map(lambda n: f":{n}"), text.map(":{}".format))
query = st.lists(
    st.tuples(st.sampled_from(["namespace", "synchronous", "busy_timeout_ms", "db", "x"]), text),
    max_size=3,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from([*KNOWN_SCHEMES, "http", "Redis", ""]))
    user = draw(st.sampled_from(["", "alice", "default"]))
    auth = draw(st.sampled_from(["", f"{user}:{SECRET}@", f":{SECRET}@"]))
    host = draw(st.one_of(st.sampled_from(["127.0.0.1", "localhost", "h1,h2", ""]), text))
    path = draw(st.one_of(st.sampled_from(["", "/", "/0", "/9", "/mymaster/0", "/x.db"]), text))
    q = draw(query)
    return f"{scheme}://{auth}{host}{draw(port)}{path}" + (f"?{q}" if q else "")


@settings(max_examples=400, deadline=None)
@given(urls())
def test_any_url_opens_or_raises_config_error_without_the_password(url: str) -> None:
    try:
        broker = open_broker(url)
    except ConfigError as exc:
        assert SECRET not in str(exc), str(exc)
        return
    assert SECRET not in repr(broker)


@given(st.text(max_size=60))
def test_arbitrary_text_never_escapes_as_another_error(url: str) -> None:
    with contextlib.suppress(ConfigError):
        open_broker(url)


@given(urls())
def test_redaction_hides_the_password(url: str) -> None:
    assert SECRET not in redact_url(url)
