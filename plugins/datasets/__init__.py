"""Reference datasets plugins."""
