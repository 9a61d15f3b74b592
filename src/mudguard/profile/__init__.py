"""mudguard.profile."""
