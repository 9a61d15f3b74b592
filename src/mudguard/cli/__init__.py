"""The ``mudguard`` command line (Typer). Formatting with Rich lives only here."""
