"""Run a command while every core is kept busy: ``python tests/cpu_burner.py -- make test``.

The suite must pass on a loaded machine as well as on a quiet one (``make test-busy``). This starts
one spinning process per core (``--burners N`` to choose), runs the command, stops the burners
whatever happens, prints how long the command took and exits with the command's own exit code.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def _spin() -> None:
    while True:
        pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="spinning processes (default: cores)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. -- make test")
    if args.burners < 1:
        parser.error(f"--burners {args.burners} is not valid: use 1 or more")
    burners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    started = time.monotonic()
    try:
        code = subprocess.call(command)
    finally:
        for b in burners:
            b.kill()
            b.join()
    print(
        f"cpu_burner: {' '.join(command)} exited {code} after {time.monotonic() - started:.0f} s "
        f"with {args.burners} burner(s) on {os.cpu_count()} core(s)",
        flush=True,
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
