"""``python -m mudguard`` runs the CLI."""

from mudguard.cli.main import main

main()
