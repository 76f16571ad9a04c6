"""The options of the reference weighting methods, one dataclass per method.

Kept apart from the methods, without TensorFlow, so that the command line can type every method's
options (a mistyped key or value fails when Hydra composes) without importing any method; the
method's module is imported when a run builds it. pyproject.toml declares each method
(``mtbench.plugins``) and its options (``mtbench.configs``).

An option that is a choice is an Enum whose members are named as the values users type, so that
a wrong value fails when Hydra composes and the message lists the choices. The methods also take
the values as strings (for Python callers) and hold them as plain strings, which ``get_config``
returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


# weighting=aligned_mtl: aligned_mtl.py
class ScaleMode(StrEnum):
    """The choices of ``aligned_mtl``'s ``scale_mode`` (:class:`AlignedMTLConfig`)."""

    min = "min"
    median = "median"
    rmse = "rmse"


@dataclass
class AlignedMTLConfig:
    """Attributes:
    scale_mode: The common singular value of the aligned gradients: ``min`` (the paper: the
        smallest non-zero one), ``median`` or ``rmse`` (the root mean square), as in the
        reference code.
    """

    scale_mode: ScaleMode = ScaleMode.min


# weighting=auto_lambda: auto_lambda.py
@dataclass
class AutoLambdaConfig:
    """Attributes:
    init_weight: Every task's weight before the first meta update (the reference code's
        ``autol_init``, 0.1).
    weight_lr: Adam's learning rate for the task weights (the reference's ``autol_lr``: 1e-4
        is its default in ``trainer_dense.py`` and the README's for NYUv2; it uses 3e-4 on
        CIFAR-100 and 3e-5 on CityScapes).
    primary_tasks: The tasks whose meta-batch loss the weights are learned to lower (the
        reference's ``--task``); empty: every task (its multi-task setting, ``all``). Naming a
        subset makes the other tasks auxiliary.
    radius: The finite-difference step of the Hessian-vector product, as a length in
        parameter space: ``epsilon = radius / |d|`` (the reference's 0.01).
    """

    init_weight: float = 0.1
    weight_lr: float = 1e-4
    primary_tasks: list[str] = field(default_factory=list)
    radius: float = 0.01


# weighting=cagrad: cagrad.py
@dataclass
class CAGradConfig:
    """Attributes:
    c: The radius of the ball around the mean gradient, relative to its norm (0: the mean
        gradient; the paper uses 0.4 on NYUv2 and Cityscapes, as does the reference code).
    rescale: Divide the update by ``1 + c^2`` (1, the reference default), by ``1 + c`` (2), or
        not at all (0).
    sum_scale: Multiply the update by the number of tasks T, as the authors' code does "to match
        the sum loss" (its ``overwrite_grad``). Off by default, as in LibMTL: the update is then
        on the scale of the mean gradient, 1/T of that of ``ew``'s summed losses.
    """

    c: float = 0.4
    rescale: int = 1
    sum_scale: bool = False


# weighting=cagrad_log: cagrad_log.py
@dataclass
class CAGradLogConfig(CAGradConfig):
    """The options of ``cagrad`` (:class:`CAGradConfig`), applied to the log-loss
    gradients.

    Attributes:
    c: The radius of the ball around the mean log-loss gradient, relative to its norm (the
        reference's 0.4).
    rescale: Divide the update by ``1 + c^2`` (1, the reference's), by ``1 + c`` (2), or not at
        all (0).
    sum_scale: Multiply the update by the number of tasks T, as the reference's
        ``overwrite_grad`` does. Off by default, as for ``cagrad``, so that the two differ only
        in the logarithm.
    """


# weighting=config: config.py
@dataclass
class ConFIGConfig:
    """Attributes:
    preference: Relative weight ``w_t`` per task name of the projections the direction asks for,
        ``<u_t, d> proportional to w_t`` (tasks not listed: 1, the reference's equal weights),
        e.g. ``{fine: 2.0}``.
    """

    preference: dict[str, float] = field(default_factory=dict)


# weighting=cr_mogm: cr_mogm.py
@dataclass
class CRMOGMConfig:
    """Attributes:
    alpha: The weight of the previous smoothed weights in the moving average (0: plain MGDA;
        1: the first step's weights forever); constant (torchjd's default 0.9).
    """

    alpha: float = 0.9


# weighting=db_mtl: db_mtl.py
@dataclass
class DBMTLConfig:
    """Attributes:
    beta: The averaging factor of each task's gradient average,
        ``m_t <- g_t + beta_k (m_t - g_t)`` with ``beta_k = beta / k^beta_sigma`` at step k
        (the reference's ``DB_beta``, 0.9); 0 keeps no average (a second momentum in front of
        the optimizer, which slows short runs: see the class docstring).
    beta_sigma: How fast ``beta_k`` decays with the step (the reference's ``DB_beta_sigma``;
        0, the reference default, keeps it constant).
    """

    beta: float = 0.9
    beta_sigma: float = 0.0


# weighting=dualproj: dualproj.py
@dataclass
class DualProjConfig:
    """Attributes:
    preference: Relative weight ``p_t`` per task name of the combination that is projected,
        ``sum_t p_t g_t / T`` (tasks not listed: 1, so by default the mean gradient, as in the
        reference), e.g. ``{fine: 2.0}``.
    norm_eps: The Gram matrix is divided by its trace (the squared Frobenius norm of the
        gradients); below this trace it is taken as zero (the reference's ``norm_eps``).
    reg_eps: Added to the normalised Gram matrix's diagonal so the projection is well posed
        (the reference's ``reg_eps``).
    """

    preference: dict[str, float] = field(default_factory=dict)
    norm_eps: float = 1e-4
    reg_eps: float = 1e-4


# weighting=dwa: dwa.py
@dataclass
class DynamicWeightAverageConfig:
    """Attributes:
    temperature: The softmax temperature ``T`` (the paper uses 2; larger is closer to equal
        weights).
    """

    temperature: float = 2.0


# weighting=excess_mtl: excess_mtl.py
@dataclass
class ExcessMTLConfig:
    """Attributes:
    robust_step_size: The step size of the exponentiated update of the task weights (the
        reference's default 0.01; the authors' README example uses 1; larger moves the weights
        faster, 0 keeps them equal).
    """

    robust_step_size: float = 0.01


# weighting=fairgrad: fairgrad.py
@dataclass
class FairGradConfig:
    """Attributes:
    alpha: The fairness parameter: 0 is utilitarian (equal weights, the mean gradient), 1
        proportional fairness (the Nash bargaining solution of Nash-MTL), larger values are
        closer to max-min fairness (the reference code's default 1; the paper's scripts use 2).
    """

    alpha: float = 1.0


# weighting=famo: famo.py
class FAMOUpdate(StrEnum):
    """The choices of ``famo``'s ``update`` (:class:`FAMOConfig`)."""

    same_batch = "same_batch"
    next_batch = "next_batch"


@dataclass
class FAMOConfig:
    """Attributes:
    gamma: Weight decay of the task logits (the reference code's ``gamma``, default 0.01).
    weight_lr: Adam's learning rate for the task logits (the reference's ``w_lr``, 0.025).
    update: ``same_batch`` (the paper): after the optimizer step the trainer evaluates the batch
        again (one extra forward pass) and the logits learn from that batch's loss change.
        ``next_batch``: no extra pass; the change is measured between the losses of one step and
        the next step's batch (costs nothing, but is dominated by batch-to-batch noise).
    """

    gamma: float = 0.01
    weight_lr: float = 0.025
    update: FAMOUpdate = FAMOUpdate.same_batch


# weighting=graddrop: graddrop.py
class GradientOf(StrEnum):
    """The choices of ``graddrop``'s ``gradient_of`` (:class:`GradDropConfig`)."""

    features = "features"
    shared_parameters = "shared_parameters"


@dataclass
class GradDropConfig:
    """Attributes:
    leak: How much of each task's gradient always passes, ``l`` in [0, 1] (0: plain GradDrop,
        1: the plain sum).
    gradient_of: ``features`` (the paper: the drop acts on the gradient of the shared
        representation, which is then back-propagated) or ``shared_parameters`` (on the
        backbone's parameter gradients, as the Nash-MTL and FAMO benchmark code does).
    seed: Seeds the dropout draws; ``null`` derives it from the run's seed.
    """

    leak: float = 0.0
    gradient_of: GradientOf = GradientOf.features
    seed: int | None = None


# weighting=gradnorm: gradnorm.py
@dataclass
class GradNormConfig:
    """Attributes:
    alpha: The asymmetry ``alpha`` (the paper uses 1.5 on NYUv2; 0 asks for equal gradient
        norms whatever the training rates).
    weight_lr: Adam's learning rate for the loss weights. The paper trains them with the
        network's optimizer; the default is the reference experiment's Adam learning rate.
    """

    alpha: float = 1.5
    weight_lr: float = 1e-3


# weighting=gradvac: gradvac.py
@dataclass
class GradVacConfig:
    """Attributes:
    beta: The rate of the exponential moving average of each pair's cosine similarity, the
        target (the paper uses 0.01).
    seed: Seeds the random order of the pairs; ``null`` derives it from the run's seed.
    """

    beta: float = 0.01
    seed: int | None = None


# weighting=imtl: imtl.py
@dataclass
class IMTLConfig:
    """Attributes:
    upper_bound: Balance the gradients of the shared representation (the batch's features)
        instead of those of the shared parameters, as MGDA-UB does (the paper's cheaper option).
    """

    upper_bound: bool = False


# weighting=imtl_l: imtl_l.py
@dataclass
class ImpartialLossConfig:
    """Attributes:
    init_scale: The initial ``s`` of every task (0, as in LibMTL: every weight starts at 1).
    """

    init_scale: float = 0.0


# weighting=imtl_log: imtl_log.py
@dataclass
class IMTLLogConfig(IMTLConfig):
    """The options of ``imtl`` (:class:`IMTLConfig`), applied to the log-loss gradients.

    Attributes:
    upper_bound: Balance the log-loss gradients of the shared features instead of those of the
        shared parameters (the reference offers the shared parameters only).
    """


# weighting=mgda: mgda.py
#: The choices of ``mgda``'s and ``mgda_log``'s ``normalization`` (:class:`MGDAConfig`); made by
#: a call because ``loss+`` is not a Python name.
Normalization = StrEnum(
    "Normalization",
    [(value, value) for value in ("none", "l2", "loss", "loss+")],
    module=__name__,
)


@dataclass
class MGDAConfig:
    """Attributes:
    upper_bound: MGDA-UB: use each task's gradient of the shared representation (the batch's
        features) instead of the shared parameters; the combination is back-propagated through
        the backbone once.
    normalization: How gradients are scaled before solving (the reference code's option; the
        paper uses none): ``none``, ``l2`` (by their norm), ``loss`` (by the task loss) or
        ``loss+`` (by both). The weights found are applied to the unscaled gradients.
    """

    upper_bound: bool = False
    normalization: Normalization = Normalization.none


# weighting=mgda_log: mgda_log.py
@dataclass
class MGDALogConfig(MGDAConfig):
    """The options of ``mgda`` (:class:`MGDAConfig`), applied to the log-loss gradients.

    Attributes:
    upper_bound: Use each task's gradient of the shared features instead of the shared
        parameters (MGDA-UB; the reference's ``params="rep"``).
    normalization: How the log-loss gradients are scaled before solving: ``none``, ``l2`` (by
        their norm; the reference's ``norm``), ``loss`` (by the task loss ``L_t``, not its
        logarithm, as the reference) or ``loss+`` (by both).
    """


# weighting=moco: moco.py
@dataclass
class MoCoConfig:
    """Attributes:
    beta: The step size of the tracked gradients at step 1 (LibMTL's ``MoCo_beta``); 1 with
        ``beta_sigma=0`` tracks nothing (tracking slows short runs: see the class docstring).
    beta_sigma: It decays as ``beta / k^beta_sigma`` at step k (LibMTL's ``MoCo_beta_sigma``).
    gamma: The step size of the task weights at step 1 (LibMTL's ``MoCo_gamma``).
    gamma_sigma: It decays as ``gamma / k^gamma_sigma`` (LibMTL's ``MoCo_gamma_sigma``).
    rho: The L2 regularisation of the task weights' objective (LibMTL's ``MoCo_rho``).
    """

    beta: float = 0.5
    beta_sigma: float = 0.5
    gamma: float = 0.1
    gamma_sigma: float = 0.5
    rho: float = 0.0


# weighting=modo: modo.py
@dataclass
class MoDoConfig:
    """Attributes:
    gamma: Step size of the weights' update (the reference's ``MoDo_gamma``).
    rho: L2 regularisation of the weights in their update (``MoDo_rho``).
    """

    gamma: float = 0.001
    rho: float = 0.1


# weighting=nashmtl: nashmtl.py
@dataclass
class NashMTLConfig:
    """Attributes:
    update_weights_every: Solve for new weights every this many steps (the paper's cheaper
        variant); the steps between reuse the last weights at the cost of one backward pass.
    optim_niter: Iterations of the solver per update (the reference's 20; Newton's method
        usually converges in fewer and then stops).
    max_norm: Clip the norm of the shared-parameter update to this (the reference's 1.0);
        0 disables clipping.
    """

    update_weights_every: int = 1
    optim_niter: int = 20
    max_norm: float = 1.0


# weighting=pcgrad: pcgrad.py
class Reduction(StrEnum):
    """The choices of ``pcgrad``'s ``reduction`` (:class:`PCGradConfig`)."""

    sum = "sum"
    mean = "mean"


@dataclass
class PCGradConfig:
    """Attributes:
    reduction: ``sum`` (the paper's Algorithm 1) or ``mean`` of the projected gradients.
    seed: Seeds the random order of projections; ``null`` derives it from the run's seed.
    """

    reduction: Reduction = Reduction.sum
    seed: int | None = None


# weighting=rlw: rlw.py
class Distribution(StrEnum):
    """The choices of ``rlw``'s ``distribution`` (:class:`RandomLossWeightingConfig`)."""

    normal = "normal"
    uniform = "uniform"
    dirichlet = "dirichlet"


@dataclass
class RandomLossWeightingConfig:
    """Attributes:
    distribution: Where the weights come from at each step: ``normal`` (softmax of standard
        normal draws, the paper's recommended and its reference code's choice), ``uniform``
        (uniform draws on [0, 1] divided by their sum) or ``dirichlet`` (Dirichlet(1, ..., 1)).
    seed: Seeds the draws; ``null`` derives it from the run's seed.
    """

    distribution: Distribution = Distribution.normal
    seed: int | None = None


# weighting=scaleinvls: scaleinvls.py
@dataclass
class ScaleInvariantConfig:
    """Attributes:
    epsilon: Added to every loss before its logarithm. 0 as in the reference code (a loss of
        exactly 0 then makes the step non-finite); FAMO's code uses 1e-8 for its log losses.
    """

    epsilon: float = 0.0


# weighting=sdmgrad: sdmgrad.py
@dataclass
class SDMGradConfig:
    """Attributes:
    lamda: Regularisation towards the mean gradient (the reference's ``SDMGrad_lamda``; the
        paper's lambda).
    niter: Projected-gradient iterations on the weights per update (``SDMGrad_niter``).
    weight_lr: Step size of those iterations (the reference's SGD learning rate).
    weight_momentum: Their momentum (the reference's SGD momentum; the buffer starts afresh at
        every update, as the reference builds a new optimizer each time).
    """

    lamda: float = 0.3
    niter: int = 20
    weight_lr: float = 5.0
    weight_momentum: float = 0.5


# weighting=static: static.py
@dataclass
class StaticConfig:
    """Attributes:
    weights: Loss weight per task name, e.g. ``{fine: 1.0, coarse: 0.5}``; tasks not listed get
        ``default``.
    default: The weight of tasks that ``weights`` does not name.
    """

    weights: dict[str, float] = field(default_factory=dict)
    default: float = 1.0


# weighting=stch: stch.py
@dataclass
class SmoothTchebycheffConfig:
    """Attributes:
    mu: The smoothing parameter ``mu > 0`` (the reference code's ``STCH_mu``, 1). Small values
        approach the Tchebycheff scalarisation (only the worst normalised task is trained); large
        values approach ``sum_t log L_t`` (every task weighted by ``1 / L_t``).
    warmup_epochs: Epochs trained on ``sum_t log L_t`` before the nadir epoch (the reference
        code's ``STCH_warmup_epoch``, 4). The epoch after them is trained the same way and its
        mean training losses become the nadir point; STCH proper starts in the epoch after that
        (with the default 4, the 6th epoch).
    """

    mu: float = 1.0
    warmup_epochs: int = 4


# weighting=upgrad: upgrad.py
@dataclass
class UPGradConfig:
    """Attributes:
    norm_eps: The Gram matrix is divided by its trace (the squared Frobenius norm of the
        gradients); below this trace it is taken as zero (the reference's ``norm_eps``).
    reg_eps: Added to the normalised Gram matrix's diagonal so the projections are well posed
        (the reference's ``reg_eps``).
    """

    norm_eps: float = 1e-4
    reg_eps: float = 1e-4


# weighting=uw: uw.py
class UncertaintyForm(StrEnum):
    """The choices of ``uw``'s ``form`` (:class:`UncertaintyConfig`)."""

    classification = "classification"
    regression = "regression"


@dataclass
class UncertaintyConfig:
    """Attributes:
    form: ``classification`` (``exp(-s) L + s/2``, the paper's Eq. 10 for a softmax likelihood)
        or ``regression`` (``exp(-s) L / 2 + s/2``, its Eq. 7 for a Gaussian likelihood), with
        ``s = log sigma^2`` per task.
    init_log_variance: The initial ``s`` of every task (0: every weight starts at 1).
    """

    form: UncertaintyForm = UncertaintyForm.classification
    init_log_variance: float = 0.0
