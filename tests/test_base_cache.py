"""First-experience models shared across runs: a run that reuses a stored
first experience ends exactly as one that trained it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY_RUN

from bdr_avalanche.experiment.config import ExperimentConfig
from bdr_avalanche.experiment.runner import run_experiment

TINY = TINY_RUN


def run(out: Path, name: str, **overrides) -> dict:
    cfg = ExperimentConfig(output_dir=str(out), name=name, **{**TINY, **overrides})
    return run_experiment(cfg)


def weights(out: Path, name: str, t: int) -> dict[str, torch.Tensor]:
    return torch.load(out / name / "models" / f"exp_{t:02d}.pt", weights_only=True)


def test_a_reused_first_experience_gives_the_same_run(tmp_path):
    # trained from scratch, nothing stored
    alone = run(tmp_path, "alone", method="lucir_cwd_bdr", reuse_base=False)
    assert alone["base_model"] == {"reused": False, "cache": None}
    assert not (tmp_path / "base_models").exists()
    # LUCIR+CwD trains the first experience and stores it ...
    first = run(tmp_path, "cwd", method="lucir_cwd")
    cache = Path(first["base_model"]["cache"])
    assert first["base_model"]["reused"] is False
    assert cache.parent == tmp_path / "base_models" and cache.is_file()
    # ... LUCIR+CwD+BDR starts from it and ends as the run that trained it
    reused = run(tmp_path, "reused", method="lucir_cwd_bdr")
    assert reused["base_model"] == {"reused": True, "cache": str(cache)}
    assert reused["accuracy_matrix"] == alone["accuracy_matrix"]
    assert reused["old_to_new"] == alone["old_to_new"]
    for t in range(len(alone["accuracy_matrix"])):
        a, b = weights(tmp_path, "alone", t), weights(tmp_path, "reused", t)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), t
    saved = json.loads((tmp_path / "reused" / "results.json").read_text())
    assert saved["base_model"]["reused"] is True


def test_only_settings_of_the_first_experience_share_it(tmp_path):
    first = run(tmp_path, "a", method="lucir_cwd")
    key = Path(first["base_model"]["cache"]).name
    # later phases split otherwise, a later-only hyper-parameter: same base
    assert run(tmp_path, "b", method="lucir_cwd_bdr", n_phases=2)["base_model"][
        "reused"
    ]
    assert run(tmp_path, "c", method="lucir_cwd", margin=0.3)["base_model"]["reused"]
    # CwD acts in the first experience: LUCIR alone trains its own
    lucir = run(tmp_path, "d", method="lucir")
    assert not lucir["base_model"]["reused"]
    assert Path(lucir["base_model"]["cache"]).name != key
    for other in ({"seed": 7}, {"mem_per_class": 4}, {"n_base": 6, "n_phases": 2}):
        summary = run(tmp_path, f"e{len(other)}{list(other)[0]}", method="lucir_cwd",
                      **other)  # fmt: skip
        assert not summary["base_model"]["reused"], other


def test_a_damaged_cache_entry_is_trained_again(tmp_path):
    first = run(tmp_path, "a", method="lucir_cwd")
    cache = Path(first["base_model"]["cache"])
    cache.write_bytes(b"not a checkpoint")
    again = run(tmp_path, "b", method="lucir_cwd")
    assert not again["base_model"]["reused"]
    assert again["accuracy_matrix"] == first["accuracy_matrix"]
    torch.load(cache, weights_only=True)  # stored again, whole
