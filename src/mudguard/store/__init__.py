"""mudguard.store."""
