"""The ``moco`` weighting: multi-objective gradient correction with tracked task gradients."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_range, combine, gramian, options_of, state
from .options import MoCoConfig


class MoCo(GradientWeighting):
    """MoCo: Fernando, Shen, Liu, Chaudhury, Murugesan and Chen, "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach", ICLR 2023, as LibMTL implements it
    (``LibMTL/weighting/MoCo.py``, from the authors' code).

    MGDA's weights computed from stochastic gradients are biased; MoCo tracks each task's
    gradient instead and moves the weights by gradient steps. At step k, with each
    task gradient rescaled to the length of its loss, ``h_t = L_t g_t / (|g_t| + 1e-8)``:

    - ``Y <- Y - beta_k (Y - H)`` (the rows of Y track the rescaled gradients; ``Y_0 = 0``),
    - ``lambda <- softmax(lambda - gamma_k (Y Y' + rho I) lambda)`` (``lambda_0 = 1/T``),
    - the update is ``Y' lambda``,

    with ``beta_k = beta / k^beta_sigma`` and ``gamma_k = gamma / k^gamma_sigma``. The paper
    projects ``lambda`` onto the simplex and each tracked gradient onto a bounded set; the
    rescaling to the loss's length, the softmax in place of the projection and the missing
    bound are LibMTL's, followed here. The logged weights are ``lambda``; the update is a
    combination of the tracked gradients, not of this step's.

    A task without a labelled example in the batch has loss 0 and gradient 0: its ``h_t`` is
    ``0 / (0 + 1e-8) * 0 = 0`` and its tracked gradient moves towards 0 by ``beta_k``, as in the
    reference.

    Short budgets: ``Y`` averages the past rescaled gradients over a window that grows with k
    (their mean age is 9 steps at k = 35 and 22 at k = 156), a second momentum in front of the
    model's optimizer. With Adam at 1e-3 on the 2-epoch MultiFashion recipe the update's cosine
    with the sum of this step's gradients falls from 0.65 (first 20 steps) to 0.37 (second
    epoch), against 0.99 with ``beta=1, beta_sigma=0``, which tracks nothing; the test accuracy
    is about 20 points below ``ew``, and without tracking it trains like ``ew`` (README,
    "Every method on MultiFashion"). The defaults stay LibMTL's; the authors' own scripts used
    other values per dataset (github.com/heshandevaka/MoCo: a constant 0.99 for NYUv2, almost
    no tracking).

    The tracked gradients ``Y`` (``[T, P]``, P the number of shared parameters: memory for T
    more copies of the gradient), ``lambda`` and the step count are layer weights. P is not
    known when the trainer sets the method up, so ``Y`` is created by
    :meth:`build_gradient_state`, or, if nothing called it, on the first :meth:`aggregate`; the
    trainer traces its step (and so creates ``Y``) before it restores a checkpoint, so resuming
    works, but until then the method has one weighting variable fewer than a checkpoint holds.
    Like LibMTL, it needs the shared parameters' gradients.

    Example:
        ``python -m mtbench weighting=moco weighting.gamma=0.1``
    """

    def __init__(
        self,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_range("beta", beta, 0.0, 1.0, low_open=True)
        check_range("beta_sigma", beta_sigma, 0.0)
        check_range("gamma", gamma, 0.0, low_open=True)
        check_range("gamma_sigma", gamma_sigma, 0.0)
        check_range("rho", rho, 0.0)
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.gamma, self.gamma_sigma = float(gamma), float(gamma_sigma)
        self.rho = float(rho)
        self.tracked: keras.Variable | None = None

    def build_state(self, num_tasks: int) -> None:
        uniform = keras.initializers.Constant(1.0 / num_tasks)
        self.task_weights = state(self, "task_weights", (num_tasks,), uniform)
        self.steps = state(self, "steps")

    def build_gradient_state(self, gradient_size: int) -> None:
        """Create the tracked gradients ``Y`` (``[T, gradient_size]``, zeros) once."""
        shape = (self.num_tasks, int(gradient_size))
        if self.tracked is None:
            with tf.init_scope():  # a variable of the layer, even when first asked in a graph
                self.tracked = state(self, "tracked_gradients", shape)
        elif tuple(self.tracked.shape) != shape:
            raise ValueError(
                f"moco tracks gradients of shape {tuple(self.tracked.shape)} but got {shape}: "
                "the shared parameters changed"
            )

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        self.build_gradient_state(grads.shape[1])
        assert self.tracked is not None
        self.steps.assign_add(1.0)
        step = tf.convert_to_tensor(self.steps)
        beta_k = self.beta / tf.pow(step, self.beta_sigma)
        gamma_k = self.gamma / tf.pow(step, self.gamma_sigma)

        norms = tf.norm(grads, axis=1, keepdims=True)
        rescaled = grads / (norms + 1e-8) * tf.cast(losses, grads.dtype)[:, None]
        tracked = tf.convert_to_tensor(self.tracked)
        tracked = tracked - beta_k * (tracked - rescaled)
        self.tracked.assign(tracked)

        num_tasks = grads.shape[0]
        lam = tf.cast(tf.convert_to_tensor(self.task_weights), tf.float64)
        system = gramian(tracked) + self.rho * tf.eye(num_tasks, dtype=tf.float64)
        lam = tf.nn.softmax(lam - tf.cast(gamma_k, tf.float64) * tf.linalg.matvec(system, lam))
        weights = tf.cast(lam, tf.float32)
        self.task_weights.assign(weights)
        return combine(tracked, lam), weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, MoCoConfig)}
