"""The reference sharing architectures (``architecture=<name>``), one module each."""
