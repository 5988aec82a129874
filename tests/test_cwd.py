"""CwD plugin: adds its term in the first experience only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from probe import Probe

from bdr_avalanche import LUCIR
from bdr_avalanche.functional import class_wise_decorrelation_loss
from bdr_avalanche.models import SmallCNN
from bdr_avalanche.params import CwDParams, TrainingParams
from bdr_avalanche.protocol import make_evaluator


def test_cwd_acts_in_first_experience_only(benchmark):
    """Loss = CE + eta * CwD at t = 0, and CE + LUCIR terms afterwards."""
    extras = {0: [], 1: []}
    state = {}

    def attach(strategy):
        def hook(module, inputs, output):
            state["features"] = output.detach()

        strategy.model.backbone.register_forward_hook(hook)

    def check(strategy):
        t = strategy.clock.train_exp_counter
        ce = F.cross_entropy(strategy.mb_output, strategy.mb_y)
        extra = strategy.loss - ce
        if t == 0:
            cwd = 0.7 * class_wise_decorrelation_loss(state["features"], strategy.mb_y)
            torch.testing.assert_close(extra, cwd.reshape(1))
            torch.testing.assert_close(strategy.cwd.last_loss, cwd)
        else:
            lucir = strategy.lucir.last_losses
            torch.testing.assert_close(
                extra, (lucir["less_forget"] + lucir["margin_ranking"]).reshape(1)
            )
        extras[min(t, 1)].append(float(extra.detach()))

    strategy = LUCIR(
        backbone=SmallCNN(in_channels=3, width=8),
        training=TrainingParams(epochs=1, batch_size=16, mem_per_class=5),
        cwd=CwDParams(coef=0.7),
        device="cpu",
        plugins=[Probe(before_training_exp=attach, before_backward=check)],
        evaluator=make_evaluator(),
    )
    for exp in benchmark.train_stream[:2]:
        strategy.train(exp)
    assert extras[0] and extras[1]
    assert all(e > 0 for e in extras[0])
