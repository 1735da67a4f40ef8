"""``psra-bench serve`` with a chosen uvicorn event loop and HTTP parser (benchmarks/bench_api.py's variants).

``python benchmarks/serve_with.py LOOP HTTP serve --port …`` runs the CLI of whichever psra-bench
``PYTHONPATH`` names, with ``loop=LOOP`` / ``http=HTTP`` (uvicorn's ``asyncio``/``uvloop``/``auto``
and ``h11``/``httptools``/``auto``) as defaults of every ``uvicorn.run`` call it makes. So an
earlier commit, whose ``serve`` had no such options, can be measured with the pure-Python stack
it shipped with beside the current one, in the same run.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn


def main() -> None:
    loop, http, *argv = sys.argv[1:]
    run = uvicorn.run

    def run_with(*args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("loop", loop)
        kwargs.setdefault("http", http)
        run(*args, **kwargs)

    uvicorn.run = run_with  # type: ignore[assignment]
    from psra_bench.cli import main as cli

    sys.argv = ["psra-bench", *argv]
    cli()


if __name__ == "__main__":
    main()
