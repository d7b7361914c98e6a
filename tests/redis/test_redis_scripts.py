"""Lua scripts: constant sources with headers, data only via KEYS/ARGV, run by sha."""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from importlib import resources

import pytest
from redis_servers import namespaced_broker

from conveyor.brokers.redis.acl import COMMANDS
from conveyor.brokers.redis.base import SCRIPT_NAMES, script_source
from conveyor.brokers.redis.prune import prune
from conveyor.message import TaskMessage

FOLDER = resources.files("conveyor.brokers.redis") / "scripts"
LUA_FILES = sorted(p.name for p in FOLDER.iterdir() if p.name.endswith(".lua"))

# Pinned (security checklist): a change to any script must be deliberate. After reviewing the
# diff, refresh with: python -c "import hashlib,pathlib; [print(repr(p.name), repr(
# hashlib.sha256(p.read_bytes()).hexdigest()[:16])) for p in sorted(pathlib.Path(
# 'src/conveyor/brokers/redis/scripts').glob('*.lua'))]"
PINNED_SHA256 = {
    "cancel.lua": "d8675f0281593bb3",
    "claim.lua": "16336b34b2690631",
    "complete.lua": "6c372cea13469fbd",
    "complete_all.lua": "32ca1329a3229ba9",
    "count_running.lua": "efec2cd90b1a707d",
    "delete_queue.lua": "4f0a143b22e99d80",
    "enqueue.lua": "e83c6458a26a8dc0",
    "extend.lua": "2e9c44368efdedf8",
    "fail.lua": "e0e7032e499a9d0c",
    "lib.lua": "837274920bc7a79e",
    "limits.lua": "9b1b57c2b3a401a3",
    "manage.lua": "8346a8a448b2651d",
    "page.lua": "dbc7bd05e64f63df",
    "peek.lua": "e54808a6dde27661",
    "permit_hold.lua": "0db6b3e6e5c363d6",
    "purge.lua": "f3e6fa52d153bc86",
    "recover.lua": "1bbbb1b8021365b6",
    "release.lua": "06f5f10a0a13d09c",
    "result_watch.lua": "7068c2594fded1d1",
    "resume_progress.lua": "bece3979b9795733",
    "save_progress.lua": "ae0f4a06e418d471",
    "schedule_admin.lua": "198a9a1f2e56bb07",
    "schedule_due.lua": "a65036b870bfe7e7",
    "schedule_fire.lua": "d50c14b06d5b8821",
    "schedule_forget.lua": "29a3b7b5c773b8c0",
    "schedule_put.lua": "4298df7ca8318802",
    "stats.lua": "23895ba7fa854e94",
    "throughput.lua": "3d1fbb66ca858b54",
    "type_permit.lua": "7c18e3a07295b920",
    "unclaim.lua": "8bc115d40f0abefd",
    "wf_advance.lua": "ae9faab97feb9e5d",
    "wf_create.lua": "46fff6b73166f397",
    "wf_manage.lua": "f205c9a955249ac5",
    "wf_outbox_change.lua": "e59cfe0cd9fbd411",
    "wf_outbox_create.lua": "1a92757b660ced67",
    "wf_settle.lua": "1f469c0811bda5ba",
    "workers.lua": "74735092b320aa9e",
    "workflow_lib.lua": "325a78230e88c336",
}


def test_script_sources_match_their_pinned_hashes() -> None:
    found = {
        name: hashlib.sha256((FOLDER / name).read_bytes()).hexdigest()[:16] for name in LUA_FILES
    }
    assert found == PINNED_SHA256


def test_every_script_file_is_used() -> None:
    assert sorted(f"{n}.lua" for n in (*SCRIPT_NAMES, "lib", "limits", "workflow_lib")) == LUA_FILES


@pytest.mark.parametrize("filename", LUA_FILES)
def test_each_script_opens_with_a_keys_argv_returns_header(filename: str) -> None:
    text = (FOLDER / filename).read_text()
    header = text.split("\n\n", 1)[0]
    assert header.startswith(f"-- {filename}:")
    for part in ("-- KEYS:", "-- ARGV:", "-- Returns:"):
        assert part in header, f"{filename} header lacks {part}"


@pytest.mark.parametrize("filename", LUA_FILES)
def test_scripts_contain_no_formatting_placeholders(filename: str) -> None:
    # Data must never be formatted into script text: no Python or Lua format specifiers (Lua
    # tables use braces, so brace fields are ruled out by loading the file verbatim instead).
    text = (FOLDER / filename).read_text()
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    assert not re.search(r"%[-+ #0-9.]*[sdifxXq]|%\(", code)
    assert "string.format" not in code
    assert "loadstring" not in code and "dofile" not in code


def test_every_command_the_scripts_call_is_one_the_acl_rules_allow() -> None:
    # A user limited by acl_rules runs the scripts: a command missing there fails in a script.
    used = {
        m.group(1).lower()
        for name in LUA_FILES
        for m in re.finditer(r"redis\.p?call\('([A-Za-z]+)'", (FOLDER / name).read_text())
    }
    assert used and used <= set(COMMANDS)


def test_scripts_are_lib_plus_their_file() -> None:
    for name in SCRIPT_NAMES:
        with_limits = name in (
            *("enqueue", "claim", "peek", "complete", "complete_all", "fail"),
            *("wf_advance", "wf_settle", "type_permit", "permit_hold"),
        )
        helpers = ["lib.lua", "limits.lua"] if with_limits else ["lib.lua"]
        if name.startswith("wf_"):
            helpers.append("workflow_lib.lua")
        full = "".join((FOLDER / f).read_text() for f in [*helpers, f"{name}.lua"]).split("\n")
        loaded = script_source(name)
        assert loaded.endswith((FOLDER / f"{name}.lua").read_text())
        # Helpers the script never reaches are blanked line for line (prune.py), nothing else.
        lines = loaded.split("\n")
        assert len(lines) == len(full)
        assert all(line in (kept, "") for line, kept in zip(lines, full, strict=True))


def test_a_script_keeps_every_helper_it_reaches() -> None:
    helpers = (
        "local BLOCK = 13\n"
        "local function used(x)\n  return inner(x)\nend\n"
        "local function inner(x)\n  return x\nend\n"
        "local function unused(x)\n  return inner(x)  -- only_in_a_comment()\nend\n"
        "local function only_in_a_comment()\n  return 1\nend\n"
        "local function named_in_a_string()\n  return 2\nend\n"
        "local cache = {}  -- per run\n"
        "local seen = {}\n"
    )
    script = "-- unused() cache\nreturn used(BLOCK) .. 'named_in_a_string -- x' .. #seen\n"
    lines = prune(helpers, script).split("\n")
    assert lines[:4] == ["local BLOCK = 13", "local function used(x)", "  return inner(x)", "end"]
    assert lines[4:7] == ["local function inner(x)", "  return x", "end"]
    assert lines[7:13] == [""] * 6  # unused, and only_in_a_comment (named in unused's comment)
    assert lines[13] == "local function named_in_a_string()"
    assert lines[16:18] == ["", "local seen = {}"]
    assert "\n".join(lines).endswith(script)


async def test_every_script_compiles_as_loaded(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        client = redis_broker._client
        for name in SCRIPT_NAMES:
            sha = await client.script_load(script_source(name))
            assert sha == hashlib.sha1(script_source(name).encode()).hexdigest()


async def test_scripts_are_registered_and_run_by_sha(redis_url: str) -> None:
    async with namespaced_broker(redis_url) as redis_broker:
        await redis_broker.enqueue([TaskMessage(id="a", type="t")])
        await redis_broker.claim(["default"], limit=1, lease_s=30)
        client = redis_broker._client
        expected = {n: hashlib.sha1(script_source(n).encode()).hexdigest() for n in SCRIPT_NAMES}
        assert {n: s.sha for n, s in redis_broker._scripts.items()} == expected
        loaded = await client.script_exists(expected["enqueue"], expected["claim"])
        assert loaded == [True, True]


async def test_int_text_gives_the_text_redis_makes_of_the_number(redis_url: str) -> None:
    # lib.lua's int_text hands integers to redis.call as text: it must be exactly what Redis
    # stores for the same Lua number (SET formats it), over the whole range it takes on.
    lib = (FOLDER / "lib.lua").read_text()
    helpers = lib[lib.index("local MAX_EXACT") : lib.index("-- Store one checked message")]
    script = helpers + (
        "local wrong = {}\n"
        "for i = 1, #ARGV do\n"
        "  local v = tonumber(ARGV[i])\n"
        "  redis.call('SET', KEYS[1], v)\n"
        "  local text = int_text(v)\n"
        "  if text ~= v and text ~= redis.call('GET', KEYS[1]) then\n"
        "    wrong[#wrong + 1] = ARGV[i]\n"
        "  end\n"
        "end\n"
        "redis.call('DEL', KEYS[1])\n"
        "return wrong\n"
    )
    rng = random.Random(7)
    top = 2**53
    values = [0, 1, 9, 10, 99, 100, 999, 1000, 9999, 10**4, 10**7 - 1, 10**7, 10**8 - 1, 10**8]
    values += [10**8 + 1, 10**15, 1_765_000_000_000_000, top - 1, top - 10**8, -1, 2.5, top]
    values += [rng.randrange(10**k) for k in range(1, 17) for _ in range(50)]
    values += [rng.randrange(top) for _ in range(1000)]
    async with namespaced_broker(redis_url) as redis_broker:
        client = redis_broker._client
        key = f"conveyor-test:int-text:{uuid.uuid4().hex}"
        wrong = await client.eval(script, 1, key, *[repr(v) for v in values])
    assert wrong == []
