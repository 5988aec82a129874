"""Compare LUCIR, LUCIR+CwD and LUCIR+CwD+BDR on the embedded ``digits``
benchmark (4 base classes, then 3 experiences of 2), on CPU in minutes.

    python experiments/digits_demo.py [--seeds 3] [--epochs 30]

Prints average incremental accuracy, last accuracy and forgetting, and for
the last phase the accuracy on old and on new classes and the share of
old-class test images predicted as a new class (mean and standard deviation
over seeds).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import torch
from avalanche.training.determinism.rng_manager import RNGManager
from tqdm import tqdm

from bdr_avalanche import LUCIR
from bdr_avalanche.benchmarks import split_digits
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator, train_and_evaluate

METHODS = {
    "LUCIR": {},
    "LUCIR+CwD": {"cwd": True},
    "LUCIR+CwD+BDR": {"cwd": True, "bdr": True},
}


def run(method: str, seed: int, epochs: int, progress) -> dict[str, float]:
    RNGManager.set_random_seeds(seed)
    benchmark = split_digits(seed=seed)
    strategy = LUCIR(
        backbone=SmallCNN(in_channels=1, width=32),
        training=TrainingParams(
            lr=0.1,
            milestones=[int(epochs * 2 / 3), int(epochs * 5 / 6)],
            batch_size=32,
            epochs=epochs,
            eval_batch_size=512,
            mem_per_class=20,
        ),
        evaluator=make_evaluator(),
        device="cpu",
        **METHODS[method],
    )
    results = train_and_evaluate(strategy, benchmark, progress=progress)
    return {
        "avg_inc_acc": 100 * results.average_incremental_accuracy,
        "last_acc": 100 * results.last_accuracy,
        "forgetting": 100 * results.forgetting,
        "old_acc": 100 * results.old_accuracy[-1],
        "new_acc": 100 * results.new_accuracy[-1],
        "old_to_new": 100 * results.old_to_new[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per experience")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message="No loggers specified")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    start = time.perf_counter()
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    total = len(METHODS) * args.seeds * 4
    with tqdm(total=total, desc="experiences", unit="exp") as bar:
        for seed in range(args.seeds):
            for method in METHODS:
                bar.set_postfix(method=method, seed=seed)
                rows[method].append(run(method, seed, args.epochs, bar))

    columns = {
        "avg_inc_acc": "avg inc acc",
        "last_acc": "last acc",
        "forgetting": "forgetting",
        "old_acc": "last: old acc",
        "new_acc": "last: new acc",
        "old_to_new": "old -> new",
    }
    header = f"{'method':<15}" + "".join(f"{c:>16}" for c in columns.values())
    print(f"\ndigits, 4 base classes + 3 x 2, {args.seeds} seeds, mean ± std (%)")
    print(header)
    print("-" * len(header))
    for method, runs in rows.items():
        cells = []
        for key in columns:
            values = np.array([r[key] for r in runs])
            cells.append(f"{values.mean():6.2f} ± {values.std():5.2f}")
        print(f"{method:<15}" + "".join(f"{c:>16}" for c in cells))
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
