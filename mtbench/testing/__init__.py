"""Conformance suites for plugin authors: reusable pytest classes a plugin's tests subclass.

Each suite is a class of test methods parameterised by class attributes, in the style of Hydra's
``LauncherTestSuite``; weighting methods add the properties they claim as mixins, in the style of
torchjd's aggregator tests::

    from mtbench.testing import NonConflicting, PermutationInvariant, Serialises, WeightingSuite

    class TestMine(WeightingSuite, NonConflicting, PermutationInvariant, Serialises):
        config = {"name": "mine"}

pytest collects the subclasses (named ``Test...``), never the suites themselves. The suites:

- :class:`WeightingSuite` and its property mixins (:mod:`mtbench.testing.weighting`);
- :class:`TaskKindSuite` for a task kind (:mod:`mtbench.testing.tasks`);
- :class:`DatasetSuite` for a dataset (:mod:`mtbench.testing.datasets`);
- :class:`BackboneSuite` and :class:`HeadSuite` for model parts (:mod:`mtbench.testing.backbones`,
  :mod:`mtbench.testing.heads`), fed random inputs described by :class:`ArraySpec`;
- :class:`ArchitectureSuite` for a sharing architecture (:mod:`mtbench.testing.architectures`),
  built from backbone and head plugins.

Importing this package imports pytest (and NumPy); TensorFlow is imported by the tests that use it.
"""

from mtbench.testing.architectures import ArchitectureSuite
from mtbench.testing.arrays import ArraySpec
from mtbench.testing.backbones import BackboneSuite
from mtbench.testing.datasets import DatasetSuite
from mtbench.testing.heads import HeadSuite
from mtbench.testing.tasks import TaskKindSuite
from mtbench.testing.weighting import (
    Batch,
    Deterministic,
    FiniteOnMissingTask,
    FiniteOnZeroGradient,
    LinearUnderScaling,
    MeanWhenAgreeing,
    NonConflicting,
    NonNegativeWeights,
    PermutationInvariant,
    ScaleInvariant,
    Serialises,
    Step,
    WeightingSuite,
    assert_close,
)

__all__ = [
    "ArchitectureSuite",
    "ArraySpec",
    "BackboneSuite",
    "Batch",
    "DatasetSuite",
    "Deterministic",
    "FiniteOnMissingTask",
    "FiniteOnZeroGradient",
    "HeadSuite",
    "LinearUnderScaling",
    "MeanWhenAgreeing",
    "NonConflicting",
    "NonNegativeWeights",
    "PermutationInvariant",
    "ScaleInvariant",
    "Serialises",
    "Step",
    "TaskKindSuite",
    "WeightingSuite",
    "assert_close",
]
