"""Secondary MUD repositories: build and check (``mudguard repo``)."""
