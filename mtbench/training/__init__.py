"""Training, one idea per module, in the order data flows through a fit:

- :mod:`~mtbench.training.losses`: each task's loss over a batch's labelled examples;
- :mod:`~mtbench.training.step`: one replica's step (losses, the weighting method, the update);
- :mod:`~mtbench.training.counters`: what the compiled steps tally over an epoch;
- :mod:`~mtbench.training.compiled`: the compiled training call and prediction function;
- :mod:`~mtbench.training.records`: what a fit produced (epoch records, timings);
- :mod:`~mtbench.training.selection`: which epoch is the best;
- :mod:`~mtbench.training.checkpoints`: a fit's ``last.npz`` and ``best.npz``;
- :mod:`~mtbench.training.trainer`: :class:`Trainer`, the epochs, budget, evaluation and logs.

Users import the public names from :mod:`mtbench.trainer`. This package imports none of its
modules, so that :mod:`mtbench.testing` can use :mod:`~mtbench.training.losses` alone.
"""
