"""LUCIR, CwD and herding checked against the paper's official code.

The references are the ``ref_*`` functions of :mod:`reference.paper_code`:
independent float64 transcriptions of the FACIL fork shipped with the BDR
paper (``zyuh/BDR-main``); that module's docstring cites the file and line
of each.

The strategy-level tests check the rest of the reference's wiring: sigma
initialised to 1 (approach/lucir_utils.py:25), the optimizer of each phase
(approach/lucir_cwd_BDR.py:135-153) and herding's eval mode and eval
transform (dataset/exemplars_selection.py:24-28, 105-109).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.training.determinism.rng_manager import RNGManager
from helpers import make_benchmark
from probe import Probe
from reference.paper_code import (
    as_rows,
    ref_cwd,
    ref_herding,
    ref_less_forget,
    ref_margin_ranking,
    ref_normalize,
)

from bdr_avalanche import LUCIR, HerdingBuffer
from bdr_avalanche.functional import (
    class_wise_decorrelation_loss,
    herding_select,
    less_forget_loss,
    margin_ranking_loss,
)
from bdr_avalanche.models import (
    CosineIncrementalClassifier,
    CosineIncrementalNet,
    SmallCNN,
)
from bdr_avalanche.params import TrainingParams
from bdr_avalanche.protocol import make_evaluator


def _labels(counts: list[int], gen: torch.Generator) -> torch.Tensor:
    y = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    return y[torch.randperm(len(y), generator=gen)]


def _features(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """Rows with very different norms (the references normalise)."""
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return x * torch.exp(2.0 * torch.randn(n, 1, generator=gen, dtype=torch.float64))


# ----------------------------------------------------------------------------
# The loop references agree with the reference's own torch code
# ----------------------------------------------------------------------------


def test_loop_references_agree_with_reference_torch_modules():
    """Sanity of the transcriptions: the loop references equal the torch
    modules and ops the reference code calls, in float64."""
    gen = torch.Generator().manual_seed(7)
    f, f_old = _features(9, 5, gen), _features(9, 5, gen)
    expected = torch.nn.CosineEmbeddingLoss()(f, f_old, torch.ones(9, dtype=f.dtype))
    assert math.isclose(ref_less_forget(f, f_old), float(expected), rel_tol=1e-12)

    scores = torch.rand(10, 7, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.tensor([0, 5, 1, 2, 6, 3, 0, 4, 2, 1])
    hard = y < 3
    gt = scores.gather(1, y.unsqueeze(1))[hard].repeat(1, 2)
    novel = scores[hard, 3:].topk(2, dim=1)[0]
    ones = torch.ones(int(hard.sum()) * 2, 1, dtype=torch.float64)
    expected = torch.nn.MarginRankingLoss(margin=0.5)(
        gt.view(-1, 1), novel.view(-1, 1), ones
    )
    assert math.isclose(
        ref_margin_ranking(scores, y, 3, 0.5, 2), float(expected), rel_tol=1e-12
    )

    x = _features(14, 4, gen)
    y = _labels([1, 2, 5, 6], gen)
    xn = torch.nn.functional.normalize(x, p=2, dim=-1)
    loss, n_count = 0.0, 0
    for label, count in zip(*y.unique(return_counts=True), strict=True):
        if count <= 2:
            continue
        xl = xn[y == label]
        xl = xl - xl.mean(dim=0, keepdim=True)
        xl = xl / torch.sqrt(1e-8 + xl.var(dim=0, keepdim=True))
        corr = xl.t() @ xl
        off = corr.flatten()[:-1].view(3, 5)[:, 1:].flatten()  # off_diagonal
        loss += float(off.pow(2).mean())
        n_count += xl.shape[0]
    assert math.isclose(ref_cwd(x, y, 2), loss / n_count, rel_tol=1e-10)


# ----------------------------------------------------------------------------
# Our functions against the references
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_less_forget_matches_cosine_embedding_loss(seed):
    gen = torch.Generator().manual_seed(seed)
    n, d = 3 + 5 * seed, 2 + 3 * seed
    f, f_old = _features(n, d, gen), _features(n, d, gen)
    f_old[0] = f[0] * 3.0  # a pair at cosine 1
    if n > 3:
        f_old[1] = -f[1]  # and one at cosine -1
    ours = less_forget_loss(f.float(), f_old.float())
    assert math.isclose(float(ours), ref_less_forget(f, f_old), abs_tol=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_margin_ranking_matches_reference(seed, k):
    gen = torch.Generator().manual_seed(seed)
    n, num_old, num_new = 12 + seed, 4 + seed, 3 + seed
    scores = torch.rand(n, num_old + num_new, generator=gen, dtype=torch.float64)
    scores = scores * 2 - 1  # cosines
    y = torch.randint(0, num_old + num_new, (n,), generator=gen)
    y[0], y[1] = 0, num_old  # at least one old and one new sample
    for margin in (0.0, 0.5, 1.3):
        ours = margin_ranking_loss(scores.float(), y, num_old, margin, k)
        ref = ref_margin_ranking(scores, y, num_old, margin, k)
        assert ref > 0
        assert math.isclose(float(ours), ref, abs_tol=1e-6), (margin, k)


def test_margin_ranking_without_old_samples_is_zero():
    scores = torch.rand(6, 5) * 2 - 1
    y = torch.tensor([3, 4, 3, 4, 4, 3])
    assert ref_margin_ranking(scores, y, 3, 0.5, 2) == 0.0
    assert float(margin_ranking_loss(scores, y, 3, 0.5, 2)) == 0.0


# class sizes: singletons, pairs, a class of exactly 3, larger classes
CWD_BATCHES = [[1, 2, 3, 7], [2, 2, 1, 1, 9], [5, 1, 3, 3, 12, 2], [3, 3, 3], [4]]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("counts", CWD_BATCHES)
@pytest.mark.parametrize("reject_threshold", [1, 2, 3])
def test_cwd_matches_decorrelate_loss_class(seed, counts, reject_threshold):
    """Same value, including which classes are skipped (``<=`` threshold)
    and the division by the contributing classes' sample count."""
    gen = torch.Generator().manual_seed(100 * seed + len(counts))
    d = 4 + seed
    y = _labels(counts, gen)
    x = _features(len(y), d, gen)
    x = x + 0.3 * torch.randn(len(counts), d, generator=gen, dtype=x.dtype)[y]
    ref = ref_cwd(x, y, reject_threshold)
    ours = float(class_wise_decorrelation_loss(x.float(), y, reject_threshold))
    assert math.isclose(ours, ref, rel_tol=1e-4, abs_tol=1e-7)


def test_cwd_reject_threshold_is_inclusive_and_normalisation_by_contributors():
    """A class of exactly ``reject_threshold`` samples is skipped, and the
    sum is divided by the samples of the kept classes only: here the loss
    is the kept class's term over its own size, whatever else is in the
    batch."""
    gen = torch.Generator().manual_seed(3)
    kept = _features(6, 5, gen)
    small = _features(3, 5, gen)
    x = torch.cat([kept, small])
    y = torch.tensor([0] * 6 + [1] * 3)
    alone = ref_cwd(kept, torch.zeros(6, dtype=torch.long), 3)
    assert alone > 0
    assert math.isclose(ref_cwd(x, y, 3), alone, rel_tol=1e-12)
    ours = float(class_wise_decorrelation_loss(x.float(), y, 3))
    assert math.isclose(ours, alone, rel_tol=1e-4)
    # with threshold 2 the class of 3 counts: a different value
    assert not math.isclose(ref_cwd(x, y, 2), alone, rel_tol=1e-3)
    ours2 = float(class_wise_decorrelation_loss(x.float(), y, 2))
    assert math.isclose(ours2, ref_cwd(x, y, 2), rel_tol=1e-4)
    # nothing qualifies: 0
    assert (
        float(class_wise_decorrelation_loss(x.float(), y, 6)) == 0.0 == ref_cwd(x, y, 6)
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("n", "m"), [(1, 1), (5, 5), (9, 3), (30, 20)])
def test_herding_matches_reference_selector(seed, n, m):
    """Same picks, in the same order, on L2-normalised features."""
    gen = torch.Generator().manual_seed(seed)
    feats = _features(n, 8, gen)
    normalised = torch.tensor([ref_normalize(r) for r in as_rows(feats)])
    ours = herding_select(normalised.float(), m).tolist()
    assert ours == ref_herding(feats, m)


def test_herding_ties_go_to_the_first_sample():
    """The reference's strict ``<`` keeps the first of equally good samples."""
    gen = torch.Generator().manual_seed(5)
    feats = _features(6, 4, gen)
    feats = torch.cat([feats, feats[[2, 0, 4]]])  # duplicates at 6, 7, 8
    normalised = torch.tensor([ref_normalize(r) for r in as_rows(feats)])
    ref = ref_herding(feats, 9)
    assert herding_select(normalised.float(), 9).tolist() == ref
    for original, duplicate in ((2, 6), (0, 7), (4, 8)):
        assert ref.index(original) < ref.index(duplicate)


# ----------------------------------------------------------------------------
# Cosine head, optimizer of each phase
# ----------------------------------------------------------------------------


def test_cosine_head_sigma_starts_at_one_and_scales_cosines():
    head = CosineIncrementalClassifier(6)
    assert head.sigma.shape == () and float(head.sigma.detach()) == 1.0
    head.train()
    head.adaptation(SimpleNamespace(classes_in_this_experience=[0, 1, 2]))
    assert float(head.sigma.detach()) == 1.0 and head.sigma.requires_grad
    bound = 1.0 / math.sqrt(6)  # CosineLinear.reset_parameters
    assert head.weight.abs().max() <= bound
    with torch.no_grad():
        head.sigma.fill_(2.5)
    x = torch.randn(4, 6)
    w = [ref_normalize(r) for r in as_rows(head.weight.detach())]
    expected = [
        [2.5 * sum(a * b for a, b in zip(ref_normalize(r), c, strict=True)) for c in w]
        for r in as_rows(x)
    ]
    torch.testing.assert_close(
        head(x).detach().double(),
        torch.tensor(expected, dtype=torch.float64),
        atol=1e-6,
        rtol=1e-5,
    )


@pytest.fixture(scope="module")
def lucir_run():
    """Two experiences of a LUCIR strategy; for each, what its first step
    sees: optimizer groups, the model's parameters, sigma, old model mode."""
    RNGManager.set_random_seeds(0)
    bench = make_benchmark()
    seen: dict[int, dict] = {}

    def snap(strategy):
        t = strategy.clock.train_exp_counter
        if t in seen:
            return
        head, old = strategy.model.head, strategy.lucir.old_model
        seen[t] = {
            "groups": [
                {
                    "params": [id(p) for p in g["params"]],
                    "lr": g["lr"],
                    "weight_decay": g["weight_decay"],
                    "momentum": g["momentum"],
                }
                for g in strategy.optimizer.param_groups
            ],
            "backbone": [id(p) for p in strategy.model.backbone.parameters()],
            "blocks": [id(b) for b in head.blocks],
            "sigma": id(head.sigma),
            "sigma_value": float(head.sigma.detach()),
            "old_modes": None if old is None else [m.training for m in old.modules()],
        }

    strategy = LUCIR(
        backbone=SmallCNN(in_channels=3, width=4),
        training=TrainingParams(
            lr=0.05,
            first_lr=0.2,
            weight_decay=1e-3,
            momentum=0.8,
            epochs=1,
            batch_size=16,
            eval_batch_size=64,
            milestones=(100,),
            mem_per_class=3,
        ),
        device="cpu",
        plugins=[Probe(before_backward=snap)],
        evaluator=make_evaluator(),
    )
    for exp in bench.train_stream[:2]:
        strategy.train(exp)
    return seen


def _optimized(snapshot) -> list[int]:
    return [p for g in snapshot["groups"] for p in g["params"]]


def test_first_experience_optimizer_and_sigma(lucir_run):
    """t = 0: backbone, head rows and sigma, at ``first_lr``; sigma is 1
    before the first step (lucir_cwd_BDR.py:143-149)."""
    snap = lucir_run[0]
    assert snap["sigma_value"] == 1.0
    expected = snap["backbone"] + snap["blocks"] + [snap["sigma"]]
    assert sorted(_optimized(snap)) == sorted(expected)
    assert len(_optimized(snap)) == len(set(_optimized(snap)))
    for group in snap["groups"]:
        assert group["lr"] == 0.2
        assert group["weight_decay"] == 1e-3  # on every parameter, sigma too
        assert group["momentum"] == 0.8


def test_next_experience_optimizer_has_new_rows_and_sigma_not_old_rows(lucir_run):
    """t = 1: ``model.model.parameters() + heads[-1].parameters()`` (the
    new rows and the shared sigma) at ``lr``; the old rows are out
    (lucir_cwd_BDR.py:141-151); the previous model runs in eval mode
    (lucir_cwd_BDR.py:297-298)."""
    snap = lucir_run[1]
    old_rows, new_rows = snap["blocks"]
    optimized = _optimized(snap)
    assert sorted(optimized) == sorted(snap["backbone"] + [new_rows, snap["sigma"]])
    assert old_rows not in optimized and len(optimized) == len(set(optimized))
    assert snap["sigma"] == lucir_run[0]["sigma"]  # one sigma shared by all rows
    for group in snap["groups"]:
        assert group["lr"] == 0.05
        assert group["weight_decay"] == 1e-3
        assert group["momentum"] == 0.8
    assert snap["old_modes"] and not any(snap["old_modes"])


# ----------------------------------------------------------------------------
# Herding memory: eval mode, eval transform
# ----------------------------------------------------------------------------


class Mirror:
    """A train-only augmentation: horizontal flip."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)


def _class_picks(features: torch.Tensor, y: torch.Tensor, m: int) -> dict:
    picks = {}
    for c in sorted(set(y.tolist())):
        members = [i for i in range(len(y)) if y[i] == c]
        picks[c] = [members[j] for j in ref_herding(features[members], m)]
    return picks


def test_herding_buffer_uses_eval_mode_and_eval_transform():
    """Features for herding come from the model in eval mode with the data's
    eval transform (exemplars_selection.py:24-28, 105-109), and the picks are
    the reference selector's on them."""
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    counts, m = [12, 12, 12], 4
    y = torch.arange(3).repeat_interleave(torch.tensor(counts))
    x = torch.randn(3, 3, 8, 8, generator=gen)[y] + torch.randn(
        len(y), 3, 8, 8, generator=gen
    )
    data = _make_taskaware_tensor_classification_dataset(
        x,
        y,
        targets=y.tolist(),
        task_labels=0,
        transform_groups={"train": (Mirror(), None), "eval": (None, None)},
    )
    exp = SimpleNamespace(
        dataset=data, current_experience=0, classes_in_this_experience=[0, 1, 2]
    )
    model = CosineIncrementalNet(SmallCNN(in_channels=3, width=4, last_relu=False))
    model.train()
    model.head.adaptation(exp)
    with torch.no_grad():  # running statistics far from the batch statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 1.0, generator=gen)
                module.running_var.uniform_(0.5, 3.0, generator=gen)
    bn_state = {k: v.clone() for k, v in model.state_dict().items()}

    modes = []
    hooks = [
        module.register_forward_pre_hook(lambda mod, _: modes.append(mod.training))
        for module in model.modules()
    ]
    buffer = HerdingBuffer(mem_per_class=m)
    agent = SimpleNamespace(model=model, device=torch.device("cpu"), eval_mb_size=5)
    buffer.post_adapt(agent, exp)
    for hook in hooks:
        hook.remove()

    assert modes and not any(modes)  # every module ran in eval mode
    assert model.training  # and the model's mode is given back
    for key, value in model.state_dict().items():  # BN statistics untouched
        torch.testing.assert_close(value, bn_state[key])

    ours = {c: buffer.class_indices[c].tolist() for c in range(3)}
    model.eval()
    with torch.no_grad():
        expected = _class_picks(model.backbone(x), y, m)
        mirrored = _class_picks(model.backbone(x.flip(-1)), y, m)
        model.train()
        train_mode = _class_picks(model.backbone(x), y, m)
    assert ours == expected
    # the test can tell: the train transform or train mode pick differently
    assert mirrored != expected and train_mode != expected
