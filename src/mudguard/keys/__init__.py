"""mudguard.keys."""
