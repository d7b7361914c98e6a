"""The dashboard's security rules, in one place: basic auth, CSRF tokens, response headers.

- Basic auth (optional) guards every request the dashboard app receives: pages, ``/api/``,
  ``/static/``. Credentials are compared in constant time (``hmac.compare_digest``), user and
  password both, so a wrong guess takes as long however much of it matched.
- Every POST carries a CSRF token in a hidden form field that must equal the ``conveyor_csrf``
  cookie (double submit). The cookie is random per browser, ``HttpOnly`` and
  ``SameSite=Strict``: another site can neither read it nor make the browser send it. A POST
  whose ``Origin`` header names another host is refused too. A refused POST changes nothing.
- Every response forbids inline scripts and framing (Content-Security-Policy), and sniffing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.errors import ConfigError

CSRF_COOKIE = "conveyor_csrf"
CSRF_FIELD = "csrf"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """One user and password that may use the dashboard.

    Raises:
        ConfigError: an empty user or password, or a user holding ``:``.
    """

    user: str
    password: str

    def __post_init__(self) -> None:
        if not self.user or not self.password or ":" in self.user:
            raise ConfigError("basic auth must be USER:PASSWORD, both non-empty, USER without ':'")

    @classmethod
    def parse(cls, text: str) -> BasicAuth:
        """``USER:PASSWORD`` (the password may hold ``:``).

        Raises:
            ConfigError: not of that form (the message never repeats the password).
        """
        user, sep, password = text.partition(":")
        if not sep:
            raise ConfigError("basic auth must be USER:PASSWORD")
        return cls(user, password)

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (constant time)."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, _, password = decoded.partition(b":")
        # Both compared, always: no early exit that would tell a right user from a wrong one.
        user_ok = hmac.compare_digest(user, self.user.encode())
        password_ok = hmac.compare_digest(password, self.password.encode())
        return user_ok and password_ok


class SecurityMiddleware:
    """ASGI middleware: basic auth (when configured) on every request, headers on every reply."""

    def __init__(self, app: ASGIApp, *, auth: BasicAuth | None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        if self.auth is not None and not self.auth.allows(
            Headers(scope=scope).get("authorization")
        ):
            response = PlainTextResponse(
                "authentication required",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="conveyor", charset="UTF-8"'},
            )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def csrf_token(request: Request) -> str:
    """The browser's CSRF token: its cookie's value, or a new one the response must set."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) == 43 and token.replace("-", "").replace("_", "").isalnum():
        return token
    minted: str = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(32))
    return minted


def new_csrf_cookie(request: Request) -> str | None:
    """The token :func:`csrf_token` minted for this request, if it had to mint one."""
    minted: str | None = request.state.__dict__.get("new_csrf")
    return minted


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether a POST proves it comes from one of the dashboard's own pages."""
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc.lower() != host.lower():
            return False
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())
