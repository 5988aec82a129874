"""Which plugin applies to which of Avalanche's strategies, and why.

:data:`COMPATIBILITY` is the one statement of it: the plugins check a
strategy against it before the first training step
(:func:`check_strategy`), the plugin guide's table (``docs/plugins.md``)
is :func:`markdown_table`, and
``tests/test_compat_matrix.py`` runs every entry.

BDR is defined for memory-replay training, where the memory and the new
data share the classification loss: its prior is the log share of each
class among the labels that loss trains on (the paper's ``psi``: new data
plus memory, a memory sample counted as often as the loss sees it in an
epoch). It applies where a memory enters a softmax cross-entropy, and is
refused where the loss sees the new classes alone (no memory, or a memory
that only shapes the gradient or matches logits) or is not a softmax
cross-entropy (:func:`check_softmax_ce`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from avalanche.models import MultiTaskModule
from avalanche.training.regularization import ACECriterion
from avalanche.training.supervised import ER_ACE
from torch import nn
from torch.nn import functional as F

from .._utils import get_submodule
from ._adapters import Family, StrategyAdapter, adapter_for, identify

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "COMPATIBILITY",
    "PLUGINS",
    "Family",
    "IncompatibleStrategyError",
    "Support",
    "check_model",
    "check_softmax_ce",
    "check_strategy",
    "markdown_table",
]

#: The private Avalanche names this module relies on, checked against the
#: installed Avalanche by ``tests/test_avalanche_private.py``
#: (``Class()._name``: an instance attribute). :func:`check_softmax_ce`
#: reads the loss from ``strategy._criterion``.
AVALANCHE_PRIVATE = ("avalanche.training.templates.SupervisedTemplate()._criterion",)


class IncompatibleStrategyError(ValueError):
    """A plugin was attached to a strategy it does not apply to."""


class Support(NamedTuple):
    """What a plugin does in a family of strategies."""

    works: bool
    note: str


PLUGINS: tuple[str, ...] = ("BDRPlugin", "CwDPlugin", "LUCIRPlugin")
"""The plugins of the table, in its column order."""

_CWD = Support(True, "adds its term in the first experience")
_CWD_REPLAY_LATER = Support(
    True, "adds its term in the first experience, which has no replay yet"
)
_BDR_LOADER = Support(
    True,
    "the memory is concatenated to the data: statistics over the training "
    "loader, prior in the criterion",
)
_BDR_REPLAY = Support(
    True,
    "statistics over the new data plus the storage policy's buffer (found "
    "from the ReplayPlugin); psi counts a memory sample as often as the "
    "ReplayDataLoader draws it in an epoch; prior in the criterion, which "
    "sees the data and memory batches together",
)
_LUCIR_SHARED = Support(
    True,
    "less-forget and margin ranking over each batch of data and memory; "
    "needs a cosine head (e.g. CosineIncrementalNet)",
)
_NO_MEMORY_BDR = (
    "the training loss sees the new classes alone, so there is no balance "
    "between memory and new data for BDR to correct (every old class would "
    "get the empty-class prior, which masks it out of the softmax); add a "
    "ReplayPlugin or ConcatReplayPlugin"
)
_NO_MEMORY_LUCIR = (
    "LUCIR's margin ranking term acts on memory samples of old classes, and "
    "this loss never sees one (the term would always be zero); add a "
    "ReplayPlugin or ConcatReplayPlugin"
)
_UNKNOWN = (
    "the plugin does not know how this strategy trains on its memory; "
    "it supports the strategies of the compatibility table in "
    "docs/plugins.md"
)

COMPATIBILITY: Mapping[Family, Mapping[str, Support]] = {
    Family.LUCIR: {
        "BDRPlugin": Support(True, "built in (bdr=True): " + _BDR_LOADER.note),
        "CwDPlugin": Support(True, "built in (cwd=True)"),
        "LUCIRPlugin": Support(True, "built in"),
    },
    Family.NAIVE_CONCAT: {
        "BDRPlugin": _BDR_LOADER,
        "CwDPlugin": _CWD,
        "LUCIRPlugin": _LUCIR_SHARED,
    },
    Family.NAIVE_REPLAY: {
        "BDRPlugin": _BDR_REPLAY,
        "CwDPlugin": _CWD,
        "LUCIRPlugin": _LUCIR_SHARED,
    },
    Family.REPLAY: {
        "BDRPlugin": _BDR_REPLAY,
        "CwDPlugin": _CWD,
        "LUCIRPlugin": _LUCIR_SHARED,
    },
    Family.GDUMB: {
        "BDRPlugin": Support(
            True,
            "the training set is GDumb's class-balanced memory: statistics over "
            "it, prior in the criterion (balanced classes leave mostly the "
            "scatter term omega to act)",
        ),
        "CwDPlugin": _CWD,
        "LUCIRPlugin": Support(
            False,
            "GDumb retrains the model from its initial weights at every "
            "experience, so there is no previous model to keep the features "
            "close to, and the cosine head's frozen old rows would keep their "
            "initial values",
        ),
    },
    Family.AGEM: {
        "BDRPlugin": Support(
            False,
            "its memory only constrains the gradient and never enters the "
            "training loss, which sees the new classes alone: BDR has no balance "
            "between memory and new data to correct",
        ),
        "CwDPlugin": _CWD,
        "LUCIRPlugin": Support(
            False,
            "its memory never enters the training loss, and LUCIR's margin "
            "ranking term acts on memory samples of old classes (it would "
            "always be zero)",
        ),
    },
    Family.ER_ACE: {
        "BDRPlugin": Support(
            True,
            "statistics over the new data plus the buffer's old classes (its "
            "current-class samples are copies of the new data); psi counts the "
            "labels of both batches of every step; the features of each of "
            "ER-ACE's two forward passes go with their own labels; prior added "
            "to the logits of both cross-entropies (data and buffer)",
        ),
        "CwDPlugin": _CWD_REPLAY_LATER,
        "LUCIRPlugin": Support(
            True,
            "less-forget and margin ranking over the samples of both forward "
            "passes (data and buffer); needs a cosine head",
        ),
    },
    Family.DER_PP: {
        "BDRPlugin": Support(
            True,
            "statistics over the new data plus the buffer; psi counts the buffer "
            "batch of every step; prior added to the logits of both "
            "cross-entropies (the logit-matching MSE is unchanged)",
        ),
        "CwDPlugin": _CWD_REPLAY_LATER,
        "LUCIRPlugin": Support(
            False,
            "DER stores logits of one fixed size with its exemplars, so the "
            "model's head cannot grow, and LUCIRPlugin needs a cosine head that "
            "grows with the new classes of every experience",
        ),
    },
    Family.DER: {
        "BDRPlugin": Support(
            False,
            "with beta = 0 the memory enters only the MSE between logits, never "
            "a cross-entropy, so the classification loss sees the new classes "
            "alone; use DER++ (beta > 0)",
        ),
        "CwDPlugin": _CWD_REPLAY_LATER,
        "LUCIRPlugin": Support(
            False,
            "DER stores logits of one fixed size with its exemplars, so the "
            "model's head cannot grow, and LUCIRPlugin needs a cosine head that "
            "grows with the new classes of every experience",
        ),
    },
    Family.ICARL: {
        "BDRPlugin": Support(
            False,
            "iCaRL's loss is a per-class sigmoid binary cross-entropy whose "
            "old-class targets are the previous model's outputs; BDR's prior is "
            "a log class share for a softmax cross-entropy and has no "
            "counterpart there",
        ),
        "CwDPlugin": Support(
            True,
            "adds its term in the first experience (feature_layer='feature_extractor')",
        ),
        "LUCIRPlugin": Support(
            False,
            "iCaRL distils through its own binary cross-entropy and classifies "
            "by the nearest mean of exemplars; LUCIR replaces both (cosine head, "
            "cross-entropy, less-forget) rather than adding to them",
        ),
    },
    Family.BIC: {
        "BDRPlugin": Support(
            True,
            "statistics over the new data BiC trains on (without its "
            "validation exemplars) plus its memory; prior in the cross-entropy "
            "of stage 1; the bias layer is then fitted as usual",
        ),
        "CwDPlugin": _CWD,
        "LUCIRPlugin": Support(
            False,
            "BiC adds its own logit distillation and rescales the whole loss, "
            "LUCIR's terms included, by 1 - lambda; its bias layer corrects "
            "linear logits, not cosine scores",
        ),
    },
    Family.NAIVE: {
        "BDRPlugin": Support(False, "no memory: " + _NO_MEMORY_BDR),
        "CwDPlugin": _CWD,
        "LUCIRPlugin": Support(False, "no memory: " + _NO_MEMORY_LUCIR),
    },
    Family.LWF: {
        "BDRPlugin": Support(
            False, "LwF keeps no memory (it distils on the new data): " + _NO_MEMORY_BDR
        ),
        "CwDPlugin": _CWD,
        "LUCIRPlugin": Support(
            False,
            "LwF keeps no memory (it distils on the new data): " + _NO_MEMORY_LUCIR,
        ),
    },
    Family.OTHER: {
        "BDRPlugin": Support(False, _UNKNOWN),
        "CwDPlugin": Support(
            True,
            "adds its term in the first experience of any strategy whose step "
            "calls before_backward and optimises strategy.loss",
        ),
        "LUCIRPlugin": Support(False, _UNKNOWN),
    },
}
"""Per family of strategies and per plugin: whether it applies, and what it
does there or why not."""


def check_strategy(plugin: str, strategy: SupervisedTemplate) -> StrategyAdapter:
    """The adapter of ``strategy`` for ``plugin`` (a name of :data:`PLUGINS`).

    :raises IncompatibleStrategyError: when :data:`COMPATIBILITY` refuses
        the strategy's family for the plugin, naming both and the reason.
    """
    adapter = adapter_for(strategy)
    family = adapter.family
    assert family is not None  # adapter_for identifies the strategy's family
    support = COMPATIBILITY[family][plugin]
    if not support.works:
        raise IncompatibleStrategyError(
            f"{plugin} does not apply to {type(strategy).__name__} "
            f"({family.value}): {support.note}"
        )
    return adapter


def _criterion_problem(criterion: object) -> str | None:
    """Why ``criterion`` is not a plain softmax cross-entropy, or ``None``."""
    if criterion is F.cross_entropy:
        return None
    if type(criterion) is nn.CrossEntropyLoss:
        if criterion.weight is None:
            return None
        return (
            "criterion is nn.CrossEntropyLoss with class weights (weight=...), "
            "which change the label distribution the prior corrects"
        )
    return f"criterion is {_name(criterion)}, not a softmax cross-entropy"


def _name(loss: object) -> str:
    """A function's name, else the class name of a loss object."""
    if isinstance(loss, nn.Module) or not hasattr(loss, "__qualname__"):
        return type(loss).__qualname__
    return loss.__qualname__


def check_softmax_ce(plugin: str, strategy: SupervisedTemplate) -> None:
    r"""Refuse a strategy whose classification loss is not a softmax
    cross-entropy, the loss BDR's prior is a logit adjustment for.

    Accepted: ``strategy._criterion`` an ``nn.CrossEntropyLoss`` without
    class weights (label smoothing, ``ignore_index`` and any reduction are
    fine) or ``F.cross_entropy``; and, for ER-ACE, its own
    ``ACECriterion`` (DER computes its cross-entropies itself). Class
    weights are refused: with weights :math:`w` the loss trains on the
    label distribution :math:`w_k n_k / \sum_j w_j n_j`, which the prior
    does not see, and weighting and the prior both correct the same
    imbalance.

    :raises IncompatibleStrategyError: naming the criterion and the
        plugin's opt-in, ``assume_softmax_ce=True``.
    """
    problem = _criterion_problem(strategy._criterion)
    if problem is None and isinstance(strategy, ER_ACE):
        if type(strategy.ace_criterion) is not ACECriterion:
            name = _name(strategy.ace_criterion)
            problem = f"ace_criterion is {name}, not Avalanche's ACECriterion"
    if problem is None:
        return
    opt_in = f"{plugin}(..., assume_softmax_ce=True)"
    if identify(strategy) is Family.LUCIR:
        opt_in = "strategy.bdr.assume_softmax_ce = True before training"
    raise IncompatibleStrategyError(
        f"{plugin} adds a log-prior to the logits of a softmax cross-entropy, "
        f"and {type(strategy).__name__}'s {problem}: use nn.CrossEntropyLoss() "
        "(label smoothing is fine), or, if the loss is a softmax cross-entropy "
        f"under another name, {opt_in}"
    )


def check_model(plugin: str, model: nn.Module, feature_layer: str) -> nn.Module:
    """The ``feature_layer`` submodule of a single-head ``model``.

    :raises ValueError: for a multi-head (task-incremental) model, whose
        forward needs task labels and whose heads do not share a softmax,
        or when ``feature_layer`` is not a submodule of ``model`` (the
        message lists its children).
    """
    if isinstance(model, MultiTaskModule):
        raise ValueError(
            f"{plugin} needs a single-head, class-incremental model; "
            f"{type(model).__name__} is a multi-head MultiTaskModule"
        )
    try:
        return get_submodule(model, feature_layer, "feature_layer")
    except ValueError as error:
        raise ValueError(f"{plugin}: {error}") from None


def markdown_table() -> str:
    """:data:`COMPATIBILITY` as a Markdown table (the plugin guide's,
    ``docs/plugins.md``)."""
    lines = [
        "| strategy | " + " | ".join(PLUGINS) + " |",
        "|---" * (len(PLUGINS) + 1) + "|",
    ]
    for family, row in COMPATIBILITY.items():
        cells = [
            f"{'**works**' if row[p].works else '**refused**'}: {row[p].note}"
            for p in PLUGINS
        ]
        lines.append(f"| {family.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
