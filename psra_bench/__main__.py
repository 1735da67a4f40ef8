"""``python -m psra_bench`` runs the CLI."""

from .cli import main

main()
