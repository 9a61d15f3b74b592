"""mudguard.discovery."""
