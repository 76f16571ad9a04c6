"""Reference heads plugins."""
