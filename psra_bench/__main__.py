"""``python -m psra_bench`` runs the CLI."""

from psra_bench.cli import main

main()
