"""mudguard.devices."""
