"""BDR added to Avalanche's replay strategies, Replay and DER, on Split CIFAR-100.

ResNet-18 with a 100-way linear head, a memory of 2000 images. ``BDRPlugin``
finds the strategy's memory itself and adds its prior to the cross-entropy
the memory enters: Replay's criterion, or DER++'s two cross-entropies (DER's
logit-matching term is unchanged; with ``--beta 0`` the memory enters no
cross-entropy and BDR refuses DER). ``--strategy herding`` uses the paper's
herding memory (``Naive`` with a ``ReplayPlugin`` over a ``HerdingBuffer``:
the same training as Replay). ``--cwd`` also adds ``CwDPlugin`` (first
experience only), ``--no-bdr`` leaves BDR out to compare.

    python experiments/example_replay_bdr.py --dataset_root data/cifar100
    python experiments/example_replay_bdr.py --dataset_root data/cifar100 --no-bdr
    python experiments/example_replay_bdr.py --dataset_root data/cifar100 --strategy der
    python experiments/example_replay_bdr.py --digits --epochs 2  # CPU, seconds
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from typing import Any

import torch
from avalanche.benchmarks.classic import SplitCIFAR100
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training import DER, Naive, Replay
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import (
    EvaluationPlugin,
    LRSchedulerPlugin,
    ReplayPlugin,
    SupervisedPlugin,
)
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.optim import SGD
from torch.optim.lr_scheduler import MultiStepLR

from bdr_avalanche import BDRPlugin, CwDPlugin, HerdingBuffer
from bdr_avalanche.benchmarks import class_order, split_digits
from bdr_avalanche.models import SmallCNN, resnet18_cifar


def data_and_backbone(
    args: argparse.Namespace,
) -> tuple[Any, int, int, nn.Module, int]:
    """The benchmark, its number of classes, the memory size, the backbone
    and the batch size: the digits on a small CNN, or CIFAR-100 B50 5 phases
    on ResNet-18."""
    if args.digits:  # 4 base classes, then 3 x 2; 20 exemplars per class
        return split_digits(), 10, 200, SmallCNN(in_channels=1, width=32), 32
    benchmark = SplitCIFAR100(
        n_experiences=6,  # 50 classes, then 5 x 10
        first_exp_with_half_classes=True,
        fixed_class_order=class_order(100),  # iCaRL's: RandomState(1993)
        dataset_root=args.dataset_root,
    )
    return benchmark, 100, 2000, resnet18_cifar(), 128


def make_strategy(
    args: argparse.Namespace,
    mem_size: int,
    plugins: list[SupervisedPlugin],
    common: dict[str, Any],
) -> SupervisedTemplate:
    """Replay, DER or ``Naive`` with a herding memory, with ``plugins``
    (BDR's and CwD's among them)."""
    if args.strategy == "herding":
        memory = HerdingBuffer(max_size=mem_size, feature_layer="features")
        replay = ReplayPlugin(mem_size=mem_size, storage_policy=memory)
        return Naive(plugins=[replay, *plugins], **common)
    if args.strategy == "der":  # logit matching (alpha), memory CE (beta)
        return DER(
            mem_size=mem_size,
            alpha=args.alpha,
            beta=args.beta,
            plugins=plugins,
            **common,
        )
    return Replay(mem_size=mem_size, plugins=plugins, **common)


def main(args: argparse.Namespace) -> None:
    RNGManager.set_random_seeds(args.seed)
    device = torch.device(
        f"cuda:{args.cuda}" if torch.cuda.is_available() and args.cuda >= 0 else "cpu"
    )
    epochs = args.epochs or (30 if args.digits else 160)
    benchmark, num_classes, mem_size, backbone, batch_size = data_and_backbone(args)
    # BDR and CwD read the penultimate features: the output of "features"
    head = nn.Linear(backbone.out_dim, num_classes)
    model = nn.Sequential(OrderedDict(features=backbone, classifier=head))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    milestones = [max(1, epochs // 2), max(1, epochs * 3 // 4)]
    plugins = [LRSchedulerPlugin(MultiStepLR(optimizer, milestones, gamma=0.1))]
    if not args.no_bdr:
        plugins.append(BDRPlugin(feature_layer="features"))
    if args.cwd:
        plugins.append(CwDPlugin(feature_layer="features"))
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[InteractiveLogger()],
    )
    common = dict(
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=batch_size,
        train_epochs=epochs,
        eval_mb_size=256,
        device=device,
        evaluator=evaluator,
    )
    strategy = make_strategy(args, mem_size, plugins, common)
    workers = 0 if args.digits else 4  # the digits are tensors in memory

    results = []
    for experience in benchmark.train_stream:
        print("Start of experience", experience.current_experience)
        print("Current classes:", experience.classes_in_this_experience)
        strategy.train(experience, num_workers=workers)
        results.append(strategy.eval(benchmark.test_stream, num_workers=workers))
    final = results[-1]["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
    print(f"Final accuracy on the test stream: {final:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", action="store_true", help="digits, not CIFAR")
    parser.add_argument("--dataset_root", default=None, help="CIFAR-100 folder")
    parser.add_argument("--epochs", type=int, help="per experience (160; digits 30)")
    parser.add_argument("--no-bdr", action="store_true", help="leave BDR out")
    parser.add_argument("--cwd", action="store_true", help="add CwD")
    parser.add_argument(
        "--strategy", choices=("replay", "herding", "der"), default="replay"
    )
    parser.add_argument("--alpha", type=float, default=0.1, help="DER: logit MSE")
    parser.add_argument("--beta", type=float, default=0.5, help="DER: memory CE")
    parser.add_argument("--seed", type=int, default=1993)
    parser.add_argument("--cuda", type=int, default=0, help="GPU index; -1: CPU")
    main(parser.parse_args())
