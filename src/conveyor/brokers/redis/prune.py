"""Drop the helpers a Lua script never uses from the text loaded for it.

Every EVALSHA runs its whole chunk again: Lua compiles a script once, but each run creates a
closure for every ``local function`` of the helpers prepended to it (lib.lua, limits.lua,
workflow_lib.lua) and an empty table for every ``local name = {}``, and the garbage collector
then pays for each one. A script that uses a few helpers would pay for all of them on every
call. ``prune`` blanks the definitions the script cannot reach (its own text names a helper,
that helper's body names others, and so on), line for line, so line numbers in Lua errors stay
those of the files. A name that appears anywhere in code that is kept, even in a string or as
another local's name, keeps its helper: pruning only ever keeps too much.
"""

from __future__ import annotations

import re

# A top-level helper opens at column 0 and its body closes with the first "end" at column 0
# (the scripts' layout: everything inside is indented).
_FUNCTION = re.compile(r"local function ([A-Za-z_][A-Za-z0-9_]*)\(")
_EMPTY_TABLE = re.compile(r"local ([A-Za-z_][A-Za-z0-9_]*) = \{\}(\s*--.*)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _code(line: str) -> str:
    """The line without a trailing comment; the whole line when a quote precedes the ``--``
    (it may sit in a string)."""
    at = line.find("--")
    if at < 0 or "'" in line[:at] or '"' in line[:at]:
        return line
    return line[:at]


def _names(lines: list[str]) -> set[str]:
    return {name for line in lines for name in _NAME.findall(_code(line))}


def _definitions(lines: list[str]) -> dict[str, tuple[int, int]]:
    """Each helper name -> its lines [first, last] (a name defined twice is never dropped)."""
    found: dict[str, tuple[int, int]] = {}
    twice: set[str] = set()
    i = 0
    while i < len(lines):
        function = _FUNCTION.match(lines[i])
        table = _EMPTY_TABLE.fullmatch(lines[i])
        if function:
            end = i + 1
            while end < len(lines) and lines[end] != "end":
                end += 1
            if end == len(lines):  # not the expected layout: keep the rest as it is
                break
            name, span = function.group(1), (i, end)
        elif table:
            name, span = table.group(1), (i, i)
        else:
            i += 1
            continue
        if name in found:
            twice.add(name)
        found[name] = span
        i = span[1] + 1
    for name in twice:
        del found[name]
    return found


def prune(helpers: str, script: str) -> str:
    """``helpers + script`` with the helper definitions ``script`` cannot reach made blank."""
    lines = helpers.split("\n")
    spans = _definitions(lines)
    inside = {i for first, last in spans.values() for i in range(first, last + 1)}
    # Roots: the script, and the helpers' own top-level statements (run on every call).
    wanted = _names(script.split("\n")) | _names(
        [line for i, line in enumerate(lines) if i not in inside]
    )
    todo = [name for name in spans if name in wanted]
    kept: set[str] = set()
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        kept.add(name)
        first, last = spans[name]
        for used in _names(lines[first + 1 : last + 1]) | _names([lines[first]]):
            if used in spans and used not in kept:
                todo.append(used)
    for name, (first, last) in spans.items():
        if name not in kept:
            for i in range(first, last + 1):
                lines[i] = ""
    return "\n".join(lines) + script
