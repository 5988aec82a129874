"""Workarounds of bugs in Avalanche 0.6 that the baselines would hit.

Each workaround names the Avalanche 0.6.0 code it works around (module,
class and method, as installed), what goes wrong there and when it can be
dropped; ``tests/test_baselines.py`` checks each one. By strategy:

- every baseline: :class:`_ResetOptimizerState` (momentum carried over
  from one experience to the next);
- replay, BiC, GDumb, ER-ACE: :class:`_ClassBalancedBuffer` (a deprecation
  warning that overrides the process's warning filters);
- LwF, iCaRL: :class:`_TeacherInEvalMode` (the frozen previous model runs
  in training mode);
- iCaRL: :class:`_SeenClassesNCM` (the NCM classifier predicts classes not
  seen yet) and a ``Linear`` training head over all classes, chosen by
  :func:`~bdr_avalanche.baselines.registry.icarl` because
  ``ICaRLLossPlugin.after_training_exp`` (``avalanche/training/losses.py``)
  deep-copies the model once and then reloads it with ``load_state_dict``,
  which fails once an ``IncrementalClassifier`` has grown;
- DER: :class:`_EvalMaskedClassifier` and :class:`_UnmaskedLogitsBuffer`
  (stored logits of a growing head do not match the current outputs);
- BiC: :class:`_BiCPlugin` (stage 2 fails with recent torch; distillation
  over the batch at a fixed temperature). Its bias layer corrects the
  outputs in Avalanche's eval loop (``after_eval_forward``), which is also
  where the protocol's old/new-class breakdown is measured;
- A-GEM: :class:`_AGEMPlugin` (fails on the gradients of a channels-last
  model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.core import SupervisedPlugin
from avalanche.models import IncrementalClassifier, NCMClassifier, avalanche_forward
from avalanche.models.bic_model import BiasLayer
from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.plugins import AGEMPlugin, BiCPlugin, LwFPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer
from avalanche.training.supervised.der import ClassBalancedBufferWithLogits
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

__all__: list[str] = []  # private to the package; imported by name

#: The private Avalanche names this module relies on, checked against the
#: installed Avalanche by ``tests/test_avalanche_private.py``
#: (``Class()._name``: an instance attribute). :class:`_AGEMPlugin`
#: computes the reference loss with ``strategy._criterion``, as
#: ``AGEMPlugin`` does; the other fixes subclass and override public
#: classes and methods only.
AVALANCHE_PRIVATE: tuple[str, ...] = (
    "avalanche.training.templates.SupervisedTemplate()._criterion",
)

logger = logging.getLogger(__name__)


class _ResetOptimizerState(SupervisedPlugin):
    """Clears the optimiser's state (SGD's momentum buffers) at the start of
    every experience, so that each experience starts as with a fresh SGD,
    as in LUCIR (``LRSchedulerPlugin(reset_lr=True, reset_scheduler=True)``
    resets the learning rate and the schedule).

    **Avalanche 0.6.0:** a strategy keeps one optimiser for the whole
    stream. Before every experience but the first,
    ``BatchObservation.check_model_and_optimizer``
    (``avalanche/training/templates/observation_type/batch_observation.py``)
    calls ``make_optimizer(reset_optimizer_state=False)``, and
    ``update_optimizer`` (``avalanche/models/dynamic_optimizers.py``) then
    keeps the state of every parameter the model still has: the momentum
    of experience ``t`` carries over into experience ``t + 1``. This plugin
    runs after that update (plugins' ``before_training_exp`` is triggered
    after ``check_model_and_optimizer``).

    **Drop when** Avalanche resets the optimiser state at every experience
    by default.
    """

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs) -> None:
        strategy.optimizer.state.clear()


class _ClassBalancedBuffer(ClassBalancedBuffer):
    """Avalanche's class-balanced random buffer whose ``update`` calls
    ``post_adapt`` directly, as the deprecated base method does after its
    warning.

    **Avalanche 0.6.0:** ``ExemplarsBuffer.update``
    (``avalanche/training/storage_policy.py``) is marked ``@deprecated(0.7)``,
    and the ``deprecated`` wrapper (``avalanche/_annotations.py``) calls
    ``warnings.simplefilter("once", DeprecationWarning)`` on every call:
    it puts a filter in front of the process's own (e.g. pytest's ``-W``
    options or a ``filterwarnings`` setting). Avalanche's own
    ``ReplayPlugin.after_training_exp``,
    ``GDumbPlugin.after_train_dataset_adaptation`` and
    ``BiCPlugin.after_training_exp`` still call ``update``.

    **Drop when** those plugins call ``post_adapt`` (``update`` is to be
    removed in 0.7).
    """

    def update(self, strategy: SupervisedTemplate, **kwargs) -> None:
        self.post_adapt(strategy, strategy.experience)


class _TeacherInEvalMode(SupervisedPlugin):
    """Puts a strategy's frozen previous model (its "teacher") in eval mode,
    BatchNorm with running statistics, before each experience.

    **Avalanche 0.6.0:** the teacher is a deep copy of the model made while
    it is in training mode, and nothing switches the copy to eval mode, so
    the distillation targets are computed with batch statistics and every
    teacher forward pass updates the teacher's BatchNorm statistics:

    - LwF: ``LearningWithoutForgetting.post_adapt``
      (``avalanche/training/regularization.py``, called by
      ``LwFPlugin.after_training_exp``) copies the model into
      ``prev_model``, which ``_lwf_penalty`` runs; see :func:`_lwf_teacher`.
    - iCaRL: ``ICaRLLossPlugin.after_training_exp``
      (``avalanche/training/losses.py``) copies the model into
      ``old_model`` once and reloads its weights afterwards;
      ``ICaRLLossPlugin.before_forward`` runs it; see :func:`_icarl_teacher`.

    (``BiCPlugin.after_training_exp`` does call ``eval()`` on its copy.)

    **Drop when** LwF's and iCaRL's copies are put in eval mode.

    :param get_teacher: returns the module to switch, or ``None`` before
        there is one.
    """

    def __init__(
        self, get_teacher: Callable[[SupervisedTemplate], nn.Module | None]
    ) -> None:
        super().__init__()
        self.get_teacher = get_teacher

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs) -> None:
        teacher = self.get_teacher(strategy)
        if teacher is not None:
            teacher.eval()


def _find_plugin(strategy: SupervisedTemplate, kind: type) -> Any:
    """The strategy's first plugin of type ``kind``."""
    for plugin in strategy.plugins:
        if isinstance(plugin, kind):
            return plugin
    raise ValueError(f"the strategy has no {kind.__name__}")


def _lwf_teacher(strategy: SupervisedTemplate) -> nn.Module | None:
    """LwF's previous model, for :class:`_TeacherInEvalMode`."""
    return _find_plugin(strategy, LwFPlugin).lwf.prev_model


def _icarl_teacher(strategy: SupervisedTemplate) -> nn.Module | None:
    """The feature extractor of iCaRL's previous model, for
    :class:`_TeacherInEvalMode`. Only the feature extractor: the old
    ``TrainEvalModel`` must stay in training mode, or it would answer with
    the NCM classifier."""
    old = _find_plugin(strategy, ICaRLLossPlugin).old_model
    return None if old is None else old.feature_extractor


class _SeenClassesNCM(NCMClassifier):
    """iCaRL's NCM classifier, which also masks the classes whose mean is
    still the zero vector iCaRL gives to classes not seen yet.

    **Avalanche 0.6.0:** ``_ICaRLPlugin.compute_class_means``
    (``avalanche/training/supervised/icarl.py``) starts with a zero mean for
    every class of the benchmark, and ``NCMClassifier.forward``
    (``avalanche/models/ncm_classifier.py``) scores every stored mean: a
    normalised feature is at distance 1 from a zero mean, closer than the
    means of seen classes that are more than 1 away, so classes not seen
    yet get predicted.

    **Drop when** iCaRL stores means for the seen classes only, or the NCM
    classifier ignores zero means.
    """

    mask_value = -1000.0

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        unseen = (self.class_means == 0).all(dim=1).to(out.device)
        return out.masked_fill(unseen, self.mask_value)


class _EvalMaskedClassifier(IncrementalClassifier):
    """DER's head: a linear layer with all ``num_classes`` outputs from the
    start (``initial_out_features``), unmasked in training, as in the DER
    paper, and with the classes not trained on yet masked in eval mode, so
    that predictions range over the seen classes.

    **Avalanche 0.6.0:** ``DER.training_epoch``
    (``avalanche/training/supervised/der.py``) adds
    ``F.mse_loss(mb_output[:batch_size_mem], batch_logits)`` between the
    current outputs and the logits that ``ClassBalancedBufferWithLogits.update``
    stored at the end of each sample's experience. With a growing
    ``IncrementalClassifier`` the stored logits have fewer units than the
    current outputs (the loss fails on the shapes) and the replay loader
    cannot collate logits of different sizes.

    **Drop when** DER handles logits of a growing head (then use a plain
    ``IncrementalClassifier``), together with :class:`_UnmaskedLogitsBuffer`.
    """

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        out = self.classifier(x)
        if self.masking and not self.training:
            unseen = torch.logical_not(self.active_units)
            out = out.masked_fill(mask=unseen, value=self.mask_value)
        return out


class _UnmaskedLogitsBuffer(ClassBalancedBufferWithLogits):
    """DER's buffer, storing the head's unmasked logits: the targets of
    DER's MSE term on every output.

    ``ClassBalancedBufferWithLogits.update``
    (``avalanche/training/supervised/der.py``) computes the logits with the
    model in eval mode (``compute_dataset_logits``), where
    :class:`_EvalMaskedClassifier` masks the classes not trained on yet;
    masking is turned off while it runs. **Drop with**
    :class:`_EvalMaskedClassifier`.

    :param head: the model's head.
    """

    def __init__(self, head: _EvalMaskedClassifier) -> None:
        super().__init__(max_size=0, adaptive_size=True)
        self.head = head

    def update(self, strategy: SupervisedTemplate, **kwargs) -> None:
        masking, self.head.masking = self.head.masking, False
        try:
            super().update(strategy, **kwargs)
        finally:
            self.head.masking = masking


class _BiCPlugin(BiCPlugin):
    """Avalanche's BiC with a stage 2 that runs on recent torch, the
    distillation over classes at temperature ``T``, and ``val_per_class``
    validation exemplars for every seen class.

    **Avalanche 0.6.0** (``avalanche/training/plugins/bic.py``):

    - ``BiCPlugin.bias_correction_step`` (stage 2, fitting the bias layer)
      passes ``verbose=False`` to ``MultiStepLR``, which torch 2.14 no
      longer accepts: BiC fails after its second experience. It is
      reimplemented here, unchanged otherwise (without its prints). **Drop
      when** Avalanche no longer passes ``verbose``.
    - ``BiCPlugin.cross_entropy`` takes the distillation softmax over the
      batch (``dim=0``) with a hard-coded temperature of 2, ignoring ``T``;
      here it is over the classes at temperature ``T`` (FACIL's BiC,
      without the ``T**2`` factor that Avalanche removed on purpose).
      **Drop when** Avalanche takes it over ``dim=1`` with ``self.T``.

    Not a bug, but the memory matching
    (:data:`~bdr_avalanche.baselines.MEMORY_MATCHING`):
    ``BiCPlugin.get_group_lengths`` gives the classes
    ``val_percentage x mem_size`` validation exemplars in all, for one fixed
    ``mem_size`` (``BiCPlugin.__init__`` asserts that it equals the storage
    policy's ``max_size``, 0 when :class:`~bdr_avalanche.baselines.GrowingMemoryBudget`
    grows it); here every seen class keeps ``val_per_class``.

    :param val_per_class: validation exemplars per seen class.
    :param kwargs: ``BiCPlugin``'s arguments.
    """

    def __init__(self, *, val_per_class: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_per_class = val_per_class

    def get_group_lengths(self, num_groups: int) -> list[int]:
        return [self.val_per_class] * num_groups

    def cross_entropy(self, new_outputs: Tensor, old_outputs: Tensor) -> Tensor:
        soft_targets = F.softmax(old_outputs / self.T, dim=1)
        return F.cross_entropy(new_outputs / self.T, soft_targets)

    def bias_correction_step(
        self,
        strategy: SupervisedTemplate,
        persistent_workers: bool = False,
        num_workers: int = 0,
    ) -> None:
        """BiC's stage 2, as in Avalanche 0.6: a new bias layer on the
        experience's classes is fitted on the validation exemplars of all
        seen classes, with the model frozen in eval mode."""
        model = strategy.model
        model.eval()
        self.bias_layer = BiasLayer(strategy.adapted_dataset.targets.uniques)
        self.bias_layer.to(strategy.device).train()
        optimizer = SGD(self.bias_layer.parameters(), lr=self.lr, momentum=0.9)
        scheduler = MultiStepLR(optimizer, milestones=[50, 100, 150], gamma=0.1)
        val_set = concat_datasets([b.buffer for b in self.val_buffer.values()])
        loader = DataLoader(
            val_set,
            batch_size=strategy.train_mb_size,
            shuffle=True,
            num_workers=num_workers,
            persistent_workers=persistent_workers,
        )
        for _ in range(self.stage_2_epochs):
            for batch in loader:
                x = batch[0].to(strategy.device)
                y = batch[1].to(strategy.device)
                with torch.no_grad():
                    outputs = model(x)
                loss = F.cross_entropy(self.bias_layer(outputs), y)
                loss = loss + 0.1 * self.bias_layer.beta.sum() ** 2 / 2
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scheduler.step()
        self.bias_layer.eval()
        self.bias_layer.requires_grad_(False)
        logger.debug(
            "BiC bias layer: alpha=%.4f beta=%.4f",
            self.bias_layer.alpha.item(),
            self.bias_layer.beta.item(),
        )


def _flat_gradients(model: nn.Module, device: torch.device) -> Tensor:
    """The gradients of ``model``'s parameters (zeros where there is none),
    flattened and concatenated in parameter order."""
    return torch.cat(
        [
            torch.zeros(p.numel(), device=device)
            if p.grad is None
            else p.grad.reshape(-1)
            for p in model.parameters()
        ]
    )


class _AGEMPlugin(AGEMPlugin):
    """Avalanche's A-GEM, flattening the gradients with ``reshape``.

    **Avalanche 0.6.0:** ``AGEMPlugin.before_training_iteration`` and
    ``AGEMPlugin.after_backward`` (``avalanche/training/plugins/agem.py``)
    flatten every gradient with ``p.grad.view(-1)``, which fails on a
    gradient that is not contiguous: those of the convolutions of a
    channels-last model (the ``channels_last`` speed switch). Both are
    reimplemented here with ``reshape``, unchanged otherwise: the reference
    gradient of a memory batch, and the step's gradient projected onto the
    plane orthogonal to it where their dot product is negative.

    **Drop when** Avalanche flattens the gradients with ``reshape``.
    """

    def before_training_iteration(self, strategy: SupervisedTemplate, **kwargs) -> None:
        if not self.buffers:
            return
        strategy.model.train()
        strategy.optimizer.zero_grad()
        batch = self.sample_from_memory()
        x, y = batch[0].to(strategy.device), batch[1].to(strategy.device)
        out = avalanche_forward(strategy.model, x, batch[-1])
        strategy._criterion(out, y).backward()
        self.reference_gradients = _flat_gradients(strategy.model, strategy.device)
        strategy.optimizer.zero_grad()

    @torch.no_grad()
    def after_backward(self, strategy: SupervisedTemplate, **kwargs) -> None:
        if not self.buffers:
            return
        reference = self.reference_gradients
        current = _flat_gradients(strategy.model, strategy.device)
        dot = torch.dot(current, reference)
        if dot >= 0:
            return
        projected = current - reference * (dot / torch.dot(reference, reference))
        start = 0
        for p in strategy.model.parameters():
            if p.grad is not None:
                p.grad.copy_(projected[start : start + p.numel()].view_as(p))
            start += p.numel()
