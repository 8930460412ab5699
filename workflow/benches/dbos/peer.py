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
from urllib.parse import quote, unquote, urlsplit


def sqlalchemy_url(url: str) -> str:
    """`url` as SQLAlchemy (under DBOS) reads it. libpq and our services take a Unix socket's
    directory percent-encoded as the host (`postgres://user@%2Frun%2Fpg:5432/db`, the native stack's
    `infra.sh database-url`); SQLAlchemy does not decode that host and tries to resolve it as a name.
    It wants the directory as the `host` query parameter instead. Any other URL is returned as is."""
    parts = urlsplit(url)
    host = unquote(parts.hostname or "")
    if not host.startswith("/"):
        return url
    user = parts.username or ""
    if parts.password:
        user += ":" + parts.password
    query = f"host={quote(host, safe='/')}"
    if parts.port:
        query += f"&port={parts.port}"
    if parts.query:
        query += "&" + parts.query
    return f"postgresql://{user}@{parts.path}?{query}" if user else f"postgresql://{parts.path}?{query}"


if __name__ == "__main__" and sys.argv[1:2] == ["--self-test"]:
    assert sqlalchemy_url("postgres://postgres@127.0.0.1:55432/db") == "postgres://postgres@127.0.0.1:55432/db"
    assert (
        sqlalchemy_url("postgres://postgres@%2Fwork%2Fmain%2F.run%2Fpostgres:55432/db")
        == "postgresql://postgres@/db?host=/work/main/.run/postgres&port=55432"
    )
    assert sqlalchemy_url("postgresql://u:p@%2Frun:5/d?sslmode=disable") == (
        "postgresql://u:p@/d?host=/run&port=5&sslmode=disable"
    )
    print("ok")
    sys.exit(0)

from dbos import DBOS  # noqa: E402 (after the self-test, which needs no DBOS)

url, runs = sqlalchemy_url(sys.argv[1]), int(sys.argv[2])
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
