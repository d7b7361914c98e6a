"""Broker URL parsing and password redaction in conveyor.config."""

from __future__ import annotations

import pytest

from conveyor.brokers.redis.connect import parse_redis_url
from conveyor.config import (
    BROKER_URL_ENV,
    DEFAULT_BROKER_URL,
    KNOWN_SCHEMES,
    broker_url_from_env,
    redact_url,
    split_broker_url,
)
from conveyor.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://user:s3cret@host:6379/1?namespace=x", "redis://user:***@host:6379/1?namespace=x"),
        ("rediss://admin:p%40ss@10.0.0.1:6380", "rediss://admin:***@10.0.0.1:6380"),
        # Unencoded '/', '?', '#' or '@' in the password (an invalid URL, so it ends in errors).
        ("redis://:s3c/ret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://u:s3c?ret@localhost/0", "redis://u:***@localhost/0"),
        ("redis://u:s3c#ret@localhost", "redis://u:***@localhost"),
        ("redis://u:s3c@ret@localhost", "redis://u:***@localhost"),
        # The Sentinels' own password, in the query string.
        (
            "redis+sentinel://h1/m/0?sentinel_password=s3cret",
            "redis+sentinel://h1/m/0?sentinel_password=***",
        ),
        (
            "redis+sentinel://:s3cret@h1/m?namespace=a&sentinel_password=s3cret&sentinel_username=u",
            "redis+sentinel://:***@h1/m?namespace=a&sentinel_password=***&sentinel_username=u",
        ),
    ],
)
def test_redact_url_hides_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert not any(secret in redact_url(url) for secret in ("s3c", "ret@", "p%40ss"))


@pytest.mark.parametrize("password", ["s3c/ret", "s3c?ret", "s3c#ret"])
def test_a_bad_url_error_never_shows_the_password(password: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(f"redis://:{password}@localhost:6379/0")
    assert password not in str(caught.value) and "s3c" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "redis://user@host/0", "sqlite:///x.db", "memory://"]
)
def test_redact_url_leaves_urls_without_a_password_alone(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:pw@[::1", "redis://:***@[::1"),  # urlsplit rejects this one
        ("://user:pw@host/0", "://user:***@host/0"),  # and finds no user info in this one
        ("redis://u:p@ss@host", "redis://u:***@host"),  # an unescaped @ in the password
    ],
)
def test_redact_url_hides_passwords_that_urlsplit_cannot_see(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "memory://shared",
        "sqlite:///relative.db",
        "sqlite:////abs/path.db",
        "redis://localhost:6379/9",
        "rediss://user:pw@host:6380/0",
        "unix:///run/redis.sock",
        "redis+cluster://host:7000",
    ],
)
def test_known_schemes_parse(url: str) -> None:
    parts = split_broker_url(url)

    assert parts.scheme in KNOWN_SCHEMES
    assert parts.scheme == url.split("://", 1)[0]


@pytest.mark.parametrize(
    "url", ["postgres://u:hunter2@db/x", "http://u:hunter2@host", "amqp://u:hunter2@host"]
)
def test_unknown_scheme_is_refused_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        split_broker_url(url)

    message = str(caught.value)
    assert "hunter2" not in message
    assert "unsupported broker URL" in message and "redis://" in message
    assert isinstance(caught.value, ValueError)


def test_malformed_port_is_refused_without_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        split_broker_url("redis://:hunter2@host:notaport/0")

    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["", None, 42])
def test_empty_or_non_string_url_is_refused(url: object) -> None:
    with pytest.raises(ConfigError):
        split_broker_url(url)  # type: ignore[arg-type]


def test_broker_url_from_env_prefers_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BROKER_URL_ENV, "redis://localhost:6379/3")

    assert broker_url_from_env() == "redis://localhost:6379/3"


def test_broker_url_from_env_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BROKER_URL_ENV, raising=False)

    assert broker_url_from_env() == DEFAULT_BROKER_URL
    assert broker_url_from_env("memory://x") == "memory://x"


def test_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BROKER_URL_ENV, "")

    assert broker_url_from_env() == DEFAULT_BROKER_URL


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://user:s3cret@host/x.db",
        "memory://user:s3cret@name/path",
        "ftp://user:s3cret@host/",
    ],
)
def test_bad_urls_never_show_the_password(url: str) -> None:
    from conveyor.brokers import open_broker

    with pytest.raises(ConfigError) as excinfo:
        open_broker(url)
    assert "s3cret" not in str(excinfo.value)
    assert "***" in str(excinfo.value)
