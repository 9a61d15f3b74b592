"""mudguard.portal."""
