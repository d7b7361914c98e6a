"""The web dashboard (``pip install 'conveyor[web]'``): ``create_app`` returns a Starlette app.

See docs/dashboard.md. Run it with ``conveyor dashboard``, or mount it in your ASGI app.
"""

from __future__ import annotations

from conveyor.web.app import create_app
from conveyor.web.security import BasicAuth

__all__ = ["BasicAuth", "create_app"]
