"""mtbench plugins for ordinal regression, installed as a package apart from mtbench.

The plugins, declared in this package's entry points (``pyproject.toml``) and imported by
mtbench only when a run uses them:

- task kind ``ordinal`` (:mod:`mtbench_ordinal.ordinal`): K ordered classes predicted through
  K - 1 cumulative logits;
- dataset ``ordinal_toy`` (:mod:`mtbench_ordinal.ordinal_toy`): seeded feature vectors with an
  ordinal ``grade`` and a real ``score``, some labels missing;
- backbone ``tiny_mlp`` (:mod:`mtbench_ordinal.tiny_mlp`), head ``linear``
  (:mod:`mtbench_ordinal.linear`) and weighting ``half_half`` (:mod:`mtbench_ordinal.half_half`).

Their options live in :mod:`mtbench_ordinal.options`. Importing this package imports nothing else.

Example:
    ``python -m mtbench dataset=ordinal_toy backbone=tiny_mlp head=linear weighting=half_half``
"""

__version__ = "0.1.0"
