"""A producer process for the concurrent-producer test: enqueue, then report what was acked.

``python producer.py URL NAME COUNT KEYS``: enqueues COUNT tasks one by one; every third uses
``unique`` on one of KEYS keys (payload ``{"key": k}``). Prints one JSON object: the ids whose
enqueue returned (acknowledged) and the keys refused as duplicates.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import timedelta

from conveyor import Client, DuplicateTaskError, Task


def main(url: str, name: str, count: int, keys: int) -> None:
    acked: list[str] = []
    unique: dict[str, str] = {}
    refused = 0
    rng = random.Random(name)
    with Client(url) as client:
        for i in range(count):
            if i % 3 == 0:
                key = f"k{rng.randrange(keys)}"
                try:
                    info = client.enqueue(Task("unique", {"key": key}), unique=timedelta(hours=1))
                except DuplicateTaskError:
                    refused += 1
                    continue
                unique[info.id] = key
            else:
                info = client.enqueue(Task("plain", {"producer": name, "i": i}))
            acked.append(info.id)
    print(json.dumps({"acked": acked, "unique": unique, "refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
