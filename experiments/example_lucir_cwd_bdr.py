"""LUCIR + CwD + BDR on Split CIFAR-100, with Avalanche's training loop.

The BDR paper's protocol: 50 base classes, then 5 experiences of 10 (the
iCaRL class order), a CIFAR ResNet-18, 160 epochs per experience. After
every experience the model is evaluated on the whole test stream (classes
not learned yet count as errors), and Avalanche's metrics are printed.

    python experiments/example_lucir_cwd_bdr.py --dataset_root data/cifar100
    python experiments/example_lucir_cwd_bdr.py --digits --epochs 2  # CPU, seconds

``--digits`` runs the same loop on scikit-learn's 8x8 digits (no download:
4 base classes, then 3 experiences of 2) with a small CNN.
"""

from __future__ import annotations

import argparse

import torch
from avalanche.benchmarks.classic import SplitCIFAR100
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from bdr_avalanche import LUCIR
from bdr_avalanche.benchmarks import class_order, split_digits
from bdr_avalanche.models import SmallCNN, resnet18_cifar
from bdr_avalanche.params import TrainingParams


def main(args: argparse.Namespace) -> None:
    RNGManager.set_random_seeds(args.seed)
    device = torch.device(
        f"cuda:{args.cuda}" if torch.cuda.is_available() and args.cuda >= 0 else "cpu"
    )
    epochs = args.epochs or (30 if args.digits else 160)
    if args.digits:
        benchmark = split_digits()
        backbone, batch_size = SmallCNN(in_channels=1, width=32), 32
    else:
        benchmark = SplitCIFAR100(
            n_experiences=6,  # 50 classes, then 5 x 10
            first_exp_with_half_classes=True,
            fixed_class_order=class_order(100),  # iCaRL's: RandomState(1993)
            dataset_root=args.dataset_root,
        )
        backbone, batch_size = resnet18_cifar(), 128
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[InteractiveLogger()],
    )
    # The paper's hyper-parameters are LUCIR's defaults (lr 0.1, 20
    # exemplars per class chosen by herding, CwD 0.5, BDR m1 = m2 = 0.8).
    strategy = LUCIR(
        backbone=backbone,
        training=TrainingParams(
            epochs=epochs,
            milestones=(max(1, epochs // 2), max(1, epochs * 3 // 4)),
            batch_size=batch_size,
            mem_per_class=20,
        ),
        cwd=True,
        bdr=True,
        evaluator=evaluator,
        device=device,
    )
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
    parser.add_argument("--seed", type=int, default=1993)
    parser.add_argument("--cuda", type=int, default=0, help="GPU index; -1: CPU")
    main(parser.parse_args())
