"""Drive a real Python Faktory client (``pyfaktory`` or ``faktory``) against a server.

    python faktory_py.py LIB URL push QUEUE JOBTYPE ARGS_JSON [JID]
    python faktory_py.py LIB URL work QUEUE

``work`` runs the library's own worker loop until killed. Its handlers print one line per job
to stdout: ``ran <jobtype> <args json>``. Job types: ``ok`` succeeds, ``fail`` raises, ``hang``
prints ``started`` and then sleeps (for a kill in the middle of a job). Run as a subprocess:
both libraries install signal handlers, which only the main thread may do.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any


# Module-level handlers: pyfaktory runs them in worker processes, so they must pickle.
def ok(*args: Any) -> None:
    print(f"ran ok {json.dumps(list(args))}", flush=True)


def fail(*args: Any) -> None:
    print(f"ran fail {json.dumps(list(args))}", flush=True)
    raise RuntimeError("asked to fail")


def hang(*args: Any) -> None:
    print(f"ran hang {json.dumps(list(args))}", flush=True)
    print("started", flush=True)
    time.sleep(3600)


HANDLERS = {"ok": ok, "fail": fail, "hang": hang}


def with_pyfaktory(url: str, command: str, rest: list[str]) -> None:
    from pyfaktory import Client, Consumer, Job, Producer

    if command == "push":
        queue, jobtype, args, *jid = rest
        with Client(faktory_url=url, role="producer") as client:
            job = Job(jobtype=jobtype, args=json.loads(args), queue=queue)
            if jid:
                job.jid = jid[0]
            assert Producer(client=client).push(job)
        print("pushed", flush=True)
        return
    with Client(faktory_url=url, role="consumer", beat_period=5) as client:
        consumer = Consumer(client=client, queues=[rest[0]], concurrency=1)
        for jobtype, handler in HANDLERS.items():
            consumer.register(jobtype, handler)
        print("working", flush=True)
        consumer.run()


def with_faktory(url: str, command: str, rest: list[str]) -> None:
    import faktory

    if command == "push":
        queue, jobtype, args, *jid = rest
        with faktory.connection(url) as client:
            client.queue(jobtype, args=json.loads(args), queue=queue,
                         jid=jid[0] if jid else uuid.uuid4().hex)  # fmt: skip
        print("pushed", flush=True)
        return
    worker = faktory.Worker(faktory=url, queues=[rest[0]], concurrency=1, use_threads=True)
    for jobtype, handler in HANDLERS.items():
        worker.register(jobtype, handler)
    print("working", flush=True)
    worker.run()


if __name__ == "__main__":
    lib, url, command, *rest = sys.argv[1:]
    (with_pyfaktory if lib == "pyfaktory" else with_faktory)(url, command, rest)
