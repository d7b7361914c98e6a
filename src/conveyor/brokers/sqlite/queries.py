"""Loads the named SQL queries of ``queries.sql`` and the schema script ``schema.sql``.

A query starts at a ``-- name: <name>`` line and runs to the next one; the comment lines right
after the name describe it. Keeping SQL in ``.sql`` files (as procrastinate does) lets it be read,
linted and reviewed as SQL, and guarantees no query is ever built from data with an f-string.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME_LINE = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a ``queries.sql`` text into ``{name: statement}``.

    Raises:
        ValueError: a name is repeated, or a named query has no statement.
    """
    found: dict[str, str] = {}
    marks = list(_NAME_LINE.finditer(text))
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = len(text) if following is None else following.start()
        name = mark.group(1)
        body = text[mark.end() : end]
        statement = "\n".join(
            line for line in body.splitlines() if line.strip() and not line.startswith("--")
        ).strip()
        if name in found:
            raise ValueError(f"query {name!r} is defined twice")
        if not statement:
            raise ValueError(f"query {name!r} has no statement")
        found[name] = statement
    return found


def _read(filename: str) -> str:
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")


@functools.cache
def queries() -> dict[str, str]:
    """The broker's named queries, read once from the package's ``queries.sql``."""
    return parse_queries(_read("queries.sql"))


@functools.cache
def schema_script() -> str:
    """The schema script (``schema.sql``), run on a database older than ``SCHEMA_VERSION``."""
    return _read("schema.sql")


SCHEMA_VERSION = 4
"""The ``PRAGMA user_version`` that ``schema.sql`` sets."""
