"""mudguard.dns."""
