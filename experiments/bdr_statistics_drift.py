"""How BDR's running class scatters drift over a phase, by update rule.

A simulated phase t > 0 of the paper's CIFAR-100 protocol: 50 old classes
with their 20 exemplars, 10 new classes with 500 samples each, fixed 64-d
Gaussian features (class centres apart, unit spread), shuffled batches of
128. The phase-start statistics are exact; every step then updates them
with one of three rules, and the prior follows with momentum 0.99:

- ``ours``: :func:`bdr_avalanche.functional.update_class_statistics`, the
  paper's rule with per-class weights;
- ``slip``: the paper's code as written, whose scatter blend uses the
  weights of the last class of its centre loop for every class;
- ``batch-mean``: this package before the fidelity fix (scatter about the
  batch's own class mean; nothing updated for a class with one sample).

With fixed features the true scatter never changes, so a ratio (end of
phase / phase start) away from 1 is the rule's bias. Prints, per rule and
length of phase, the mean and minimum of that ratio over the old and the new
classes, and the largest per-class difference of the prior from ``ours``.

    python experiments/bdr_statistics_drift.py [--epochs 3 30] [--seeds 3]
"""

from __future__ import annotations

import argparse

import torch

from bdr_avalanche import functional as fn

OLD, NEW, OLD_N, NEW_N, DIM, BATCH = 50, 10, 20, 500, 64, 128
M1 = M2 = 0.8
MOMENTUM, TAU = 0.99, 1.0


def update_slip(counts, centres, scatters, features, labels):
    """The paper's step with the last class's weights for every scatter."""
    k = centres.shape[0]
    new_centres, _ = fn.update_class_statistics(
        counts, centres, scatters, features, labels
    )
    b = torch.bincount(labels, minlength=k).float()
    first = torch.full((k,), len(labels)).scatter_reduce(
        0, labels, torch.arange(len(labels)), "amin"
    )
    last = int(torch.where(b > 0, first, -1).argmax())
    w_last = b[last] / (counts[last] + b[last])
    batch = fn.class_squared_distances(features, labels, new_centres) / b.clamp_min(1)
    slip = torch.where(b >= 2, torch.lerp(scatters, batch, w_last), scatters)
    return new_centres, slip


def update_batch_mean(counts, centres, scatters, features, labels):
    """This package's rule before the fix."""
    k = centres.shape[0]
    b, c_batch, s_batch = fn.class_statistics(features, labels, k)
    w = torch.where(b >= 2, b / (counts + b), 0.0)
    return torch.lerp(centres, c_batch, w[:, None]), torch.lerp(scatters, s_batch, w)


RULES = {
    "ours": fn.update_class_statistics,
    "slip": update_slip,
    "batch-mean": update_batch_mean,
}


def simulate(epochs: int, seed: int) -> dict[str, dict[str, float]]:
    gen = torch.Generator().manual_seed(seed)
    k = OLD + NEW
    labels = torch.cat(
        [torch.arange(OLD).repeat_interleave(OLD_N), torch.arange(OLD, k).repeat(NEW_N)]
    )
    features = 3.0 * torch.randn(k, DIM, generator=gen)[labels]
    features += torch.randn(len(labels), DIM, generator=gen)
    counts, centres0, scatters0 = fn.class_statistics(features, labels, k)
    prior0 = fn.bdr_log_prior(counts, scatters0, M1, TAU)
    orders = [torch.randperm(len(labels), generator=gen) for _ in range(epochs)]
    state = {name: (centres0, scatters0, prior0) for name in RULES}
    for order in orders:
        for i in range(0, len(order), BATCH):
            index = order[i : i + BATCH]
            for name, rule in RULES.items():
                c, s, p = state[name]
                c, s = rule(counts, c, s, features[index], labels[index])
                estimate = fn.bdr_log_prior(counts, s, M2, TAU)
                state[name] = (c, s, torch.lerp(estimate, p, MOMENTUM))
    out = {}
    for name, (_, s, p) in state.items():
        ratio = s / scatters0
        out[name] = {
            "old_mean": float(ratio[:OLD].mean()),
            "old_min": float(ratio[:OLD].min()),
            "new_mean": float(ratio[OLD:].mean()),
            "prior_diff": float((p - state["ours"][2]).abs().max()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 30])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{OLD} old classes x {OLD_N}, {NEW} new x {NEW_N}, {DIM}-d features, "
        f"batch {BATCH}, m1 = m2 = {M1}, momentum {MOMENTUM}; "
        f"mean over {args.seeds} seeds (min: over seeds and classes)"
    )
    header = (
        "epochs  rule         old scatter ratio (mean / min)  new (mean)"
        "  max |prior - ours|"
    )
    print(header)
    print("-" * len(header))
    for epochs in args.epochs:
        runs = [simulate(epochs, seed) for seed in range(args.seeds)]
        for name in RULES:
            rows = [r[name] for r in runs]
            mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
            worst = min(r["old_min"] for r in rows)
            diff = max(r["prior_diff"] for r in rows)
            print(
                f"{epochs:6d}  {name:11s}  {mean['old_mean']:10.3f} / {worst:5.3f}"
                f"{'':15s}  {mean['new_mean']:10.3f}  {diff:18.4f}"
            )


if __name__ == "__main__":
    main()
