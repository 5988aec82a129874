r"""The memory samples' share of the classification loss's gradient.

BDR's argument is about the gradient: with replay, the few memory samples
of the old classes contribute little to the cross-entropy's gradient next
to the many samples of the new classes, and the prior :math:`\pi` that BDR
adds to the logits rebalances that. :func:`logit_gradient_mass` and
:func:`memory_gradient_share` give the share for one batch;
:class:`GradientShareAccumulator` sums it on the device over an epoch and
:class:`MemoryGradShare` is the Avalanche plugin metric that logs it per
training epoch (``MemoryGradShare_Epoch/train_phase/...``) from the
ordinary training loop, without an extra forward or backward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from avalanche.evaluation import GenericPluginMetric
from avalanche.evaluation.metric_results import MetricResult
from avalanche.training.supervised import ER_ACE
from torch import Tensor

from ..distributed import sum_over_ranks
from ._common import (
    ExperienceClasses,
    LogitPrior,
    accumulator_dtype,
    current_experience_id,
    current_model_classes,
    current_prior,
    find_logit_prior,
)

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "GradientShareAccumulator",
    "MemoryGradShare",
    "logit_gradient_mass",
    "memory_gradient_share",
]

#: The private Avalanche names this module relies on, checked against the
#: installed Avalanche by ``tests/test_avalanche_private.py``
#: (``Class()._name``: an instance attribute). :class:`MemoryGradShare`
#: updates and reads its accumulator as ``GenericPluginMetric`` keeps it.
AVALANCHE_PRIVATE = ("avalanche.evaluation.GenericPluginMetric()._metric",)


def logit_gradient_mass(
    logits: Tensor, targets: Tensor, prior: Tensor | None = None
) -> Tensor:
    r"""Per sample, the L1 norm of the cross-entropy's gradient with respect
    to the logits, :math:`\lVert \mathrm{softmax}(z + \pi) - e_y \rVert_1`.

    Since the softmax sums to one, the norm equals :math:`2 (1 - p_y)`; it
    is computed as ``-2 * expm1(log_softmax(z + pi)[y])``, which stays
    accurate when :math:`p_y` is close to 1.

    :param logits: ``(N, C)`` logits :math:`z` (not modified; no gradient).
    :param targets: ``(N,)`` class ids.
    :param prior: ``(C,)`` vector :math:`\pi` added to every row (BDR's
        prior, padded to ``C``), or ``None`` for zero.
    :return: ``(N,)`` float32 masses, in ``[0, 2]``.
    """
    z = logits.detach().float()
    if prior is not None:
        z = z + prior.detach().float()
    log_p = torch.log_softmax(z, dim=1)
    log_p_target = log_p.gather(1, targets.long().view(-1, 1)).squeeze(1)
    return -2.0 * torch.expm1(log_p_target)


def memory_gradient_share(
    logits: Tensor,
    targets: Tensor,
    is_memory: Tensor,
    prior: Tensor | None = None,
) -> Tensor:
    r"""The share of the logit-gradient mass of a batch that comes from
    memory samples: :math:`\sum_{i \in M} m_i / \sum_i m_i` with
    :math:`m_i` the :func:`logit_gradient_mass` of sample :math:`i`.

    The batch loss's :math:`1/N` factor is common to all samples and
    cancels. Returns 0 when the total mass is 0.

    :param is_memory: ``(N,)`` booleans, true for memory samples.
    :return: a 0-dim float32 tensor (on the logits' device; no host sync).
    """
    mass = logit_gradient_mass(logits, targets, prior)
    memory = (mass * is_memory.to(mass.dtype)).sum()
    total = mass.sum()
    return torch.where(total > 0, memory / total.clamp_min(1e-30), 0.0)


class GradientShareAccumulator:
    """Standalone Avalanche ``Metric``: sums, over the batches given to
    :meth:`update`, the logit-gradient mass of memory samples and of all
    samples (and the sample counts), as tensors on the batches' device.

    Nothing is read back to the host until :meth:`values` (or
    :meth:`result`), once per epoch.
    """

    def __init__(self) -> None:
        self._sums: Tensor | None = None
        self._values: tuple[float, float] | None = None

    @torch.no_grad()
    def update(
        self,
        logits: Tensor,
        targets: Tensor,
        memory_classes: Tensor,
        prior: Tensor | None = None,
    ) -> None:
        """Add a batch.

        :param memory_classes: 1-d tensor of the class ids whose samples
            are memory samples (classes seen in an earlier experience).
        """
        mass = logit_gradient_mass(logits, targets, prior)
        dtype = accumulator_dtype(mass.device)
        is_memory = torch.isin(targets, memory_classes.to(targets.device)).to(dtype)
        mass = mass.to(dtype)
        batch = torch.stack(
            [
                (mass * is_memory).sum(),
                mass.sum(),
                is_memory.sum(),
                torch.full((), float(len(mass)), dtype=dtype, device=mass.device),
            ]
        )
        self._sums = batch if self._sums is None else self._sums + batch
        self._values = None

    def sum_over_processes(self, device: torch.device) -> None:
        """Sum the accumulated values over the processes of a process group
        (a collective: every process must call it; no-op in one process)."""
        sums = self._sums
        if sums is None:
            sums = torch.zeros(4, dtype=accumulator_dtype(device), device=device)
        self._sums = sum_over_ranks(sums)
        self._values = None

    @property
    def samples(self) -> Tensor | None:
        """Number of samples added (a tensor; ``None`` before any)."""
        return None if self._sums is None else self._sums[3]

    def values(self) -> tuple[float, float] | None:
        """``(gradient share, sample share)`` of the memory samples, read
        from the device once; ``None`` when no sample was added."""
        if self._values is None and self._sums is not None:
            memory_mass, mass, memory_count, count = self._sums.tolist()
            if count > 0:
                self._values = (
                    memory_mass / mass if mass > 0 else 0.0,
                    memory_count / count,
                )
        return self._values

    def result(self) -> float | None:
        """The memory samples' share of the logit-gradient mass."""
        values = self.values()
        return None if values is None else values[0]

    def reset(self) -> None:
        self._sums = None
        self._values = None


class MemoryGradShare(GenericPluginMetric[float, GradientShareAccumulator]):
    r"""Per training epoch, the share of the classification loss's
    logit-gradient mass that comes from memory samples.

    At every training iteration, with the logits of the training forward
    pass (``strategy.mb_output``), the labels and BDR's prior :math:`\pi`
    as the loss adds it (the :class:`~bdr_avalanche.BDRPlugin` found among
    the strategy's plugins; zero without one or while it is inactive),
    every sample's mass :math:`\lVert \mathrm{softmax}(z + \pi) - e_y
    \rVert_1` is summed on the device, separately for memory samples;
    the epoch's value is their ratio (:func:`memory_gradient_share` over
    the epoch). Memory samples are those whose label is a class of an
    earlier training experience (in class-incremental replay every
    old-class sample is one); the value is 0 in the first experience.

    ER-ACE runs its memory batch through a forward pass of its own and
    averages two cross-entropies: the new batch's over the classes present
    in it, the memory batch's over all; both batches are added, each with
    the softmax its cross-entropy takes (with ``batch_size_mem`` equal to
    the batch size, every sample weighs the same in the loss).

    The formula is the gradient of one cross-entropy over the whole batch;
    for a strategy whose loss weighs memory samples differently (DER's
    ``beta``) or is not a softmax cross-entropy (iCaRL's binary
    cross-entropy) it is the cross-entropy's share on the same logits.

    Besides the logged value, :attr:`history` keeps, per training
    experience, the per-epoch gradient shares and the share of memory
    samples among the samples (the share the gradient would have if every
    sample weighed the same). Distributed, the sums are added over the
    processes at the end of each epoch.

    :param use_prior: add BDR's prior to the logits, as the loss does;
        ``False`` measures the share the same logits would give without it.
    """

    def __init__(self, use_prior: bool = True) -> None:
        super().__init__(
            GradientShareAccumulator(), reset_at="epoch", emit_at="epoch", mode="train"
        )
        self.use_prior = use_prior
        self.history: list[dict[str, Any]] = []
        """Per training experience: ``{"experience": t, "gradient_share":
        [per epoch], "sample_share": [per epoch]}``."""
        self._classes = ExperienceClasses()
        self._memory_classes: Tensor | None = None
        self._bdr: LogitPrior | None = None
        self._current: dict[str, Any] | None = None

    def __str__(self) -> str:
        if self.use_prior:
            return "MemoryGradShare_Epoch"
        return "MemoryGradShareNoPrior_Epoch"

    def before_training_exp(self, strategy: SupervisedTemplate) -> None:
        super().before_training_exp(strategy)
        self._memory_classes = torch.tensor(
            self._classes.seen(), dtype=torch.long, device=strategy.device
        )
        self._bdr = find_logit_prior(strategy)
        self._current = {
            "experience": current_experience_id(strategy),
            "gradient_share": [],
            "sample_share": [],
        }

    def update(self, strategy: SupervisedTemplate) -> None:
        assert self._memory_classes is not None
        output = strategy.mb_output
        prior = current_prior(self._bdr, output.shape[1], self.use_prior)
        if isinstance(strategy, ER_ACE) and strategy.replay_loader is not None:
            self._update_ace(strategy, prior)
            return
        self._metric.update(output, strategy.mb_y, self._memory_classes, prior)

    def _update_ace(self, strategy: ER_ACE, prior: Tensor | None) -> None:
        """ER-ACE's two cross-entropies, averaged: the new batch's over the
        classes present in it (asymmetric: the other logits are masked out,
        on the device), the memory batch's (``mb_buffer_out``, a separate
        forward pass) over all."""
        output, targets = strategy.mb_output, strategy.mb_y
        present = torch.zeros(output.shape[1], dtype=torch.bool, device=output.device)
        present[targets] = True
        self._metric.update(
            output.detach().float().masked_fill(~present, float("-inf")),
            targets,
            self._memory_classes,  # the new batch holds no memory sample
            prior,
        )
        self._metric.update(
            strategy.mb_buffer_out, strategy.mb_buffer_y, self._memory_classes, prior
        )

    def after_training_epoch(self, strategy: SupervisedTemplate) -> MetricResult:
        self._metric.sum_over_processes(strategy.device)
        values = self._metric.values()
        if values is None:
            return None
        if self._current is not None:
            self._current["gradient_share"].append(values[0])
            self._current["sample_share"].append(values[1])
        return super().after_training_epoch(strategy)

    def after_training_exp(self, strategy: SupervisedTemplate) -> None:
        super().after_training_exp(strategy)
        if self._current is not None:
            self.history.append(self._current)
            self._current = None
        self._classes.add(
            current_experience_id(strategy), current_model_classes(strategy)
        )

    def state_dict(self) -> dict[str, Any]:
        """Classes seen, history and, inside a training experience, its
        epochs so far, as plain values (for a checkpoint, or for the shared
        epochs of a first experience)."""
        state = {
            "classes": self._classes.state_dict(),
            "history": [dict(h) for h in self.history],
        }
        if self._current is not None:
            state["current"] = {k: _copy(v) for k, v in self._current.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._classes.load_state_dict(state.get("classes", []))
        self.history = [dict(h) for h in state.get("history", [])]
        current = state.get("current")
        self._current = (
            None if current is None else {k: _copy(v) for k, v in current.items()}
        )


def _copy(value: Any) -> Any:
    """A list copied (a record's per-epoch values), other values as they are."""
    return list(value) if isinstance(value, list) else value
