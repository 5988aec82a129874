"""Compute saved by sharing first-experience models, for the README's
CIFAR-100 paper-table loop (the presets ``cifar100/b50_*phases_*`` x 3 seeds).

Counts training sample-passes (images x epochs) per experience, the
compute measure that does not depend on the machine: the first experience
trains on 50 classes x 500 images, each later one on its new classes'
images plus the herding memory (``mem_per_class`` per class seen before).
Runs are taken in the loop's order; a run whose first experience has the
key of an earlier run's (``bdr_avalanche.experiment.base_cache``) does
not train it. Usage::

    python experiments/base_cache_savings.py [--seeds 1993 1994 1995]
"""

from __future__ import annotations

import argparse

import torch

from bdr_avalanche.benchmarks._common import class_order
from bdr_avalanche.experiment.base_cache import BaseCache, first_experience_settings
from bdr_avalanche.experiment.config import load_config, preset_names

PRESETS = [n for n in preset_names() if n.startswith("cifar100/b50_")]
IMAGES_PER_CLASS = 500  # CIFAR-100's training images per class
TEST_IMAGES_PER_CLASS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1993, 1994, 1995])
    args = parser.parse_args()
    seen: set[str] = set()
    total = saved = 0
    print(f"{'run':48s} {'first exp.':>12s} {'all exps.':>12s}  first experience")
    for preset in PRESETS:
        for seed in args.seeds:
            cfg = load_config([preset], {"seed": seed}).resolved()
            increment = (100 - cfg.n_base) // cfg.n_phases
            passes = [cfg.epochs * cfg.n_base * IMAGES_PER_CLASS]
            for t in range(1, cfg.n_phases + 1):
                before = cfg.n_base + (t - 1) * increment
                new = increment * IMAGES_PER_CLASS
                passes.append(cfg.epochs * (new + cfg.mem_per_class * before))
            first = class_order(100, cfg.class_order_seed)[: cfg.n_base]
            settings = first_experience_settings(
                cfg,
                torch.device("cuda"),
                first_classes=first,
                train_size=cfg.n_base * IMAGES_PER_CLASS,
                test_size=cfg.n_base * TEST_IMAGES_PER_CLASS,
                data="CIFAR-100",  # the same files for every run
            )
            key = BaseCache("cache", settings).key
            reused = key in seen
            seen.add(key)
            total += sum(passes)
            saved += passes[0] if reused else 0
            run = f"{preset.removeprefix('cifar100/')}_seed{seed}"
            print(
                f"{run:48s} {passes[0] / 1e6:10.1f} M "
                f"{sum(passes) / 1e6:10.1f} M  {'reused' if reused else 'trained'}"
            )
    print(
        f"\n{len(seen)} first experiences trained; sample-passes without sharing "
        f"{total / 1e6:.1f} M, with sharing {(total - saved) / 1e6:.1f} M: "
        f"{100 * saved / total:.1f}% saved"
    )


if __name__ == "__main__":
    main()
