"""Reference methods that need no training machinery."""
