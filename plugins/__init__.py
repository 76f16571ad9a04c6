"""mtbench's reference plugins, installed as ``mtbench_plugins``.

They are found like any third party's: through the ``mtbench.plugins`` entry points declared in
``pyproject.toml``. Nothing in :mod:`mtbench` imports this package.
"""
