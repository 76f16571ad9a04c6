"""Reference backbones plugins."""
