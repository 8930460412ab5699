"""DBOS Transact's three-step workflow, timed: the peer of `cargo bench -p pizza-workflow`.

Usage: peer.py DATABASE_URL RUNS. DBOS keeps its state in the given database (its system database),
on the same PostgreSQL server as the engine's benchmark. Each step returns at once, like the engine's
`demo-three-steps`, so both measure the cost of making steps durable. Prints one JSON line:
{"version": ..., "runs": ..., "callers_1": steps/s, "callers_4": steps/s}.
"""

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version

from dbos import DBOS

url, runs = sys.argv[1], int(sys.argv[2])
DBOS(config={"name": "pizza-bench-peer", "system_database_url": url, "log_level": "WARNING"})


@DBOS.step()
def one(n: int) -> int:
    return n + 1


@DBOS.step()
def two(n: int) -> int:
    return n + 1


@DBOS.step()
def three(n: int) -> int:
    return n + 1


@DBOS.workflow()
def three_steps(n: int) -> int:
    return three(two(one(n)))


def steps_per_second(callers: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=callers) as pool:
        results = list(pool.map(three_steps, range(runs)))
    elapsed = time.perf_counter() - started
    assert results == [n + 3 for n in range(runs)], "a workflow returned the wrong result"
    return runs * 3 / elapsed


DBOS.launch()
three_steps(0)  # warm up: connections, prepared statements
print(
    json.dumps(
        {
            "version": version("dbos"),
            "runs": runs,
            "callers_1": steps_per_second(1),
            "callers_4": steps_per_second(4),
        }
    )
)
DBOS.destroy()
