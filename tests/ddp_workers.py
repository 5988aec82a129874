"""Process bodies of the distributed tests (a module of their own, so that
``torch.multiprocessing.spawn`` can import them in the child processes).

Each worker joins a gloo group of ``world`` processes through a file
store, does its part and saves what the test compares to
``<out>/rank<r>.pt``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import SupervisedPlugin
from helpers import make_benchmark
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bdr_avalanche import LUCIR, BDRPlugin, CwDPlugin
from bdr_avalanche.distributed import extract_features
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate
from bdr_avalanche.training import Speed
from bdr_avalanche.training.augment import BatchAugment

GLOBAL_BATCH = 16
FEATURES = 6


def run(rank: int, world: int, store: str, out: str, case: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        result = CASES[case](rank, world)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------- statistics
def global_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, targets and a linear layer's initial weight: classes 0-3
    with 1 to 6 samples each (so CwD skips a class of one sample)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(GLOBAL_BATCH, 10, generator=gen)
    y = torch.tensor([0, 1, 1, 2, 0, 3, 1, 0, 2, 1, 0, 1, 2, 0, 1, 0])
    weight = torch.randn(FEATURES, 10, generator=gen)
    return x, y, weight


def bdr_plugin(num_classes: int = 4) -> BDRPlugin:
    """A BDR plugin in the middle of a phase (statistics already set)."""
    gen = torch.Generator().manual_seed(1)
    plugin = BDRPlugin(m1=0.7, m2=0.6, momentum=0.9, tau=1.5)
    plugin.phase_counts = torch.tensor([40.0, 60.0, 30.0, 5.0])
    plugin.centres = torch.randn(num_classes, FEATURES, generator=gen)
    plugin.scatters = torch.rand(num_classes, generator=gen) + 0.5
    plugin.prior = torch.randn(num_classes, generator=gen)
    return plugin


def statistics_case(rank: int, world: int) -> dict:
    """CwD's loss and its gradient through DDP, and BDR's prior, from this
    process's share of the global batch (the plugins' own code paths)."""
    x, y, weight = global_batch()
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    x, y = x[share], y[share]
    layer = nn.Linear(10, FEATURES, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    model = DistributedDataParallel(layer)
    cwd = CwDPlugin(coef=0.5)
    cwd._active = True
    cwd._features.features = model(x)
    strategy = SimpleNamespace(mb_y=y, loss=torch.zeros(()))
    cwd.before_backward(strategy)
    strategy.loss.backward()  # DDP averages the gradient over processes

    bdr = bdr_plugin()
    bdr._features.features = torch.randn(
        GLOBAL_BATCH, FEATURES, generator=torch.Generator().manual_seed(2)
    )[share]
    bdr.after_forward(SimpleNamespace(mb_y=y))

    class Recorder:  # the recorder interface extract_features needs
        def extract(self, model, loader, device):
            batches = list(loader)
            return (
                torch.cat([b[0] for b in batches]),
                torch.cat([b[1] for b in batches]),
            )

    data = [(torch.full((3,), float(i)), i % 4) for i in range(11)]
    features, labels = extract_features(Recorder(), None, data, 4, torch.device("cpu"))
    return {
        "cwd": strategy.loss.detach(),
        "grad": layer.weight.grad.clone(),
        "prior": bdr.prior,
        "centres": bdr.centres,
        "scatters": bdr.scatters,
        "features": features,
        "labels": labels,
    }


# --------------------------------------------------------------- training
def no_batchnorm_cnn() -> SmallCNN:
    """SmallCNN without its BatchNorm layers: BatchNorm normalises each
    process's half batch with that half's statistics, so with it the two
    runs would differ by more than the order of float sums."""
    net = SmallCNN(in_channels=3, width=8)
    net.bn1, net.bn2 = nn.Identity(), nn.Identity()
    return net


class EvalCounter(SupervisedPlugin):
    """Images seen by the last evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def before_eval(self, strategy, **kwargs) -> None:
        self.images = 0

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        self.images += strategy.mb_x.shape[0]


def train_lucir(fast: bool) -> dict:
    """LUCIR+CwD+BDR on a tiny 3-experience stream, global batch 16, with
    an identity augmentation: on the fast path the batches are shuffled by
    rank 0's permutation; on the DataLoader path they are not shuffled."""
    RNGManager.set_random_seeds(0)
    benchmark = make_benchmark()
    RNGManager.set_random_seeds(0)
    counter = EvalCounter()
    strategy = LUCIR(
        backbone=no_batchnorm_cnn(),
        training=TrainingParams(
            epochs=6,
            batch_size=GLOBAL_BATCH,
            eval_batch_size=64,
            lr=0.1,
            milestones=(100,),
            mem_per_class=5,
        ),
        cwd=True,
        bdr=True,
        speed=Speed(
            batch_augment=BatchAugment((0.0,) * 3, (1.0,) * 3) if fast else None
        ),
        device="cpu",
        evaluator=make_evaluator(),
        plugins=[counter],
    )
    if not fast:
        # unshuffled one-class batches at lr 0.1 drive the learnable scale
        # through zero, where the guard stops the run: keep it at 1 here
        strategy.model.head.sigma.requires_grad_(False)
    results = train_and_evaluate(strategy, benchmark, shuffle=fast)
    return {
        "model": {k: v.clone() for k, v in strategy.model.state_dict().items()},
        "memory": dict(strategy.storage_policy.class_indices),
        "accuracy": results.accuracy_matrix,
        "prior": strategy.bdr.prior,
        "eval_images": counter.images,
    }


def training_case(rank: int, world: int) -> dict:
    return {"fast": train_lucir(fast=True), "loader": train_lucir(fast=False)}


CASES = {"statistics": statistics_case, "training": training_case}
