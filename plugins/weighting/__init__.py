"""Reference weighting plugins."""
