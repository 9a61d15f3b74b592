"""mudguard.enforce."""
