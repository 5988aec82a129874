"""First-experience models shared across runs: a run that reuses a stored
first experience ends exactly as one that trained it, and only a run whose
first experience is the same (settings and data) reuses it."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_datasets import (
    class_image,
    write_cifar100,
    write_imagefolder,
    write_imagenet,
    zip_tree,
)
from helpers import TINY_RUN

import bdr_avalanche.experiment._atomic as atomic_module
from bdr_avalanche.benchmarks import DATASETS, DatasetError
from bdr_avalanche.benchmarks.fingerprint import FINGERPRINTS, data_fingerprint
from bdr_avalanche.experiment._atomic import atomic_write, remove_stale_temporaries
from bdr_avalanche.experiment.base_cache import (
    FIRST_EXPERIENCE_KEYS,
    LATER_KEYS,
    base_settings,
)
from bdr_avalanche.experiment.compare import run_comparison
from bdr_avalanche.experiment.config import (
    ConfigError,
    ExperimentConfig,
    config_keys,
)
from bdr_avalanche.experiment.factories import build_benchmark, validate
from bdr_avalanche.experiment.run_folder import MARKER
from bdr_avalanche.experiment.runner import run_experiment
from bdr_avalanche.params import HParam

TINY = TINY_RUN
LOGGER = "bdr_avalanche.experiment.base_cache"


def run(out: Path, name: str, overwrite: bool = False, **overrides) -> dict:
    cfg = ExperimentConfig(output_dir=str(out), name=name, **{**TINY, **overrides})
    return run_experiment(cfg, overwrite=overwrite)


def weights(out: Path, name: str, t: int) -> dict[str, torch.Tensor]:
    return torch.load(out / name / "models" / f"exp_{t:02d}.pt", weights_only=True)


def entries(folder: Path) -> dict[str, bytes]:
    """The cache's entries and their bytes."""
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.pt"))}


# -- which settings decide the first experience -------------------------
def test_every_config_key_is_declared_once():
    """Top-level keys one by one; a method's record (``bdr``) as a whole."""
    keys = {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert set(FIRST_EXPERIENCE_KEYS) | set(LATER_KEYS) == keys
    assert not set(FIRST_EXPERIENCE_KEYS) & set(LATER_KEYS)
    assert all(FIRST_EXPERIENCE_KEYS.values()) and all(LATER_KEYS.values())


# Other valid values of every key, tried in turn on each base config below
# (a value that does not make a valid run there is skipped).
ALTERNATIVES = {
    "method": ["lucir", "lucir_cwd_bdr"],
    "name": ["other"],
    "seed": [7],
    "dataset": ["imagefolder"],
    "dataset_root": ["COPY"],  # a copy of the tree, files unchanged
    "download": [True],
    "n_base": [7, 5],
    "n_phases": [2, 6],
    "class_order_seed": [7],
    "resolution": [16],
    "in_memory": [True],
    "num_workers": [2],
    "backbone": ["resnet8"],
    "width": [16],
    "epochs": [3],
    "batch_size": [32],
    "first_batch_size": [16],
    "lr": [0.05],
    "first_lr": [0.05],
    "momentum": [0.5],
    "weight_decay": [1e-3],
    "milestones": [[2]],
    "lr_decay": [0.5],
    "eval_batch_size": [32],
    "mem_per_class": [1],
    "lucir.lambda_base": [1.0],
    "lucir.margin": [0.2],
    "lucir.k": [1],
    "lucir.mr_weight": [0.5],
    "cwd.coef": [0.1],
    "cwd.reject_threshold": [100],
    "bdr.m1": [0.5],
    "bdr.m2": [0.5],
    "bdr.momentum": [0.9],
    "bdr.tau": [2.0],
    "device": ["cuda"],
    "output_dir": ["OTHER"],
    "fast_input": [True],
    "amp": ["bf16"],
    "channels_last": [True],
    "compile": [True],
    "reuse_base": [False],
    "base_cache": ["OTHER"],
    "save_models": [False],
    "interactive": [True],
    "text_log": [True],
    "csv_log": [True],
    "tensorboard": [True],
    "wandb": [True],
    "wandb_project": ["other"],
    "wandb_entity": ["someone"],
    "wandb_tags": [["a"]],
    "wandb_mode": ["offline"],
}


def _another(hp: HParam) -> list:
    """A valid value other than the default, for a record's field that
    ``ALTERNATIVES`` does not list (a field added to a record)."""
    if hp.default is None:
        return [1]
    if isinstance(hp.default, bool):
        return [not hp.default]
    if hp.kind == "fraction":
        return [hp.default / 2 if hp.default else 0.5]
    return [hp.default + 1]


for _key, _spec in config_keys().items():
    if _spec.group is not None and _key not in ALTERNATIVES:
        ALTERNATIVES[_key] = _another(_spec.hparam)


def test_every_config_key_has_an_alternative_value():
    assert set(ALTERNATIVES) == set(config_keys())


def _declared(key: str) -> str:
    """The declared key of a config key: a record's field is declared with
    its record (``bdr.m1`` -> ``bdr``)."""
    return key.partition(".")[0]


STREAM_KEYS = ("dataset", "dataset_root", "n_base", "n_phases", "class_order_seed",
               "resolution", "in_memory", "download")  # fmt: skip
"""What ``build_benchmark`` reads."""


def _settings(cfg: ExperimentConfig, streams: dict) -> dict | None:
    """``base_settings`` of ``cfg`` (the device taken as given, no CUDA
    needed); ``None`` when ``cfg`` is not a valid run. ``streams`` keeps
    the streams built, by what they are built from."""
    cfg = cfg.resolved()
    stream = tuple(getattr(cfg, key) for key in STREAM_KEYS)
    try:
        validate(cfg)
        if stream not in streams:
            streams[stream] = build_benchmark(cfg)
    except (ConfigError, DatasetError):
        return None
    device = torch.device("cpu" if cfg.device == "auto" else cfg.device)
    return base_settings(cfg, streams[stream], device)


def test_the_key_changes_exactly_with_the_settings_of_the_first_experience(
    tmp_path,
):
    tree = tmp_path / "tree"
    write_imagefolder(tree, num_classes=10, train_per_class=3, size=8)
    copy = shutil.copytree(tree, tmp_path / "copy")
    common = {**TINY, "method": "lucir_cwd", "mem_per_class": 2, "n_phases": 3}
    bases = [
        # digits, LUCIR+CwD, small_cnn: the settings of its first experience
        ExperimentConfig(dataset_root=str(tree), n_base=4, **common),
        # an image tree, B0 (n_phases splits the first classes), resized
        ExperimentConfig(
            dataset="imagefolder",
            dataset_root=str(tree),
            n_base=0,
            resolution=8,
            **{**common, "n_phases": 5},
        ),
        # each baseline with hyper-parameters of its own, as the base
        *(
            ExperimentConfig(
                dataset_root=str(tree), n_base=4, **{**common, "method": b}
            )
            for b in ("lwf", "bic", "der", "er_ace", "agem")
        ),
    ]
    replace = {"COPY": str(copy), "OTHER": str(tmp_path / "other")}
    changed: dict[str, list[bool]] = {}
    streams: dict = {}
    for base in bases:
        reference = _settings(base, streams)
        assert reference is not None
        assert _settings(base, {}) == reference  # the same config, the same key
        for key, values in ALTERNATIVES.items():
            for value in values:
                value = replace.get(value, value) if isinstance(value, str) else value
                try:
                    other = base.replace({key: value})
                except ConfigError:
                    continue
                settings = _settings(other, streams)
                if settings is not None:
                    changed.setdefault(key, []).append(settings != reference)
    untried = sorted(set(ALTERNATIVES) - set(changed))
    assert not untried, f"no valid alternative value for {untried}"
    # a record's fields: as their record is declared (each field of cwd
    # changes the key, no field of bdr does)
    first = [k for k in changed if _declared(k) in FIRST_EXPERIENCE_KEYS]
    never = sorted(k for k in first if not any(changed[k]))
    assert not never, (
        f"declared to decide the first experience, never in the key: {never}"
    )  # noqa: E501
    later = [k for k in changed if _declared(k) in LATER_KEYS]
    leaking = sorted(k for k in later if any(changed[k]))
    assert not leaking, f"declared later-only, yet they change the key: {leaking}"


@pytest.mark.integration
def test_later_only_settings_do_not_change_the_first_experience(tmp_path):
    """What :data:`LATER_KEYS` declares, checked on trained runs: every
    later-only hyper-parameter changed at once (and BDR on) leaves the first
    experience's weights and accuracy as they were."""
    common = {**TINY, "reuse_base": False}
    a = run(tmp_path, "a", method="lucir_cwd", **common)
    later = {"n_phases": 2,
             "lucir": {"lambda_base": 1.0, "margin": 0.2, "k": 1, "mr_weight": 0.5},
             "bdr": {"m1": 0.5, "m2": 0.6, "momentum": 0.9, "tau": 2.0}}  # fmt: skip
    b = run(tmp_path, "b", method="lucir_cwd_bdr", **common, **later)
    assert a["accuracy_matrix"][0][0] == b["accuracy_matrix"][0][0]
    wa, wb = weights(tmp_path, "a", 0), weights(tmp_path, "b", 0)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.integration
@pytest.mark.parametrize(
    "setting", [{"cwd": {"reject_threshold": 100}}, {"num_workers": 1}]
)
def test_a_setting_of_the_first_experience_is_not_shared(tmp_path, setting):
    first = run(tmp_path, "a", method="lucir_cwd")
    other = run(tmp_path, "b", method="lucir_cwd", **setting)
    assert not other["base_model"]["reused"]
    assert other["base_model"]["cache"] != first["base_model"]["cache"]


def test_the_cpu_thread_count_is_part_of_the_key():
    """A CPU's thread count orders the floating-point sums, so a first
    experience trained with one count is not the one another count trains."""
    cfg = ExperimentConfig(**TINY).resolved()
    validate(cfg)
    benchmark = build_benchmark(cfg)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = base_settings(cfg, benchmark, cpu), base_settings(cfg, benchmark, cuda)
        torch.set_num_threads(2)
        two = base_settings(cfg, benchmark, cpu), base_settings(cfg, benchmark, cuda)
    finally:
        torch.set_num_threads(threads)
    assert (one[0]["cpu_threads"], two[0]["cpu_threads"]) == (1, 2)
    assert one[0] != two[0]
    assert one[1] == two[1]  # not read on a GPU


# -- the data ------------------------------------------------------------
def test_every_dataset_has_a_data_fingerprint():
    assert set(FINGERPRINTS) == set(DATASETS)
    assert data_fingerprint("digits", None) == data_fingerprint("digits", None)


def bump(path: Path) -> None:
    """Move the modification time of ``path`` on by a second, as any write
    does (whatever the clock's resolution)."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))


@pytest.mark.parametrize("dataset", ["cifar100", "imagenet", "imagefolder"])
def test_a_changed_data_file_changes_the_fingerprint(tmp_path, dataset):
    root = tmp_path / "data"
    if dataset == "cifar100":
        changed = write_cifar100(root) / "cifar-100-python" / "train"
    elif dataset == "imagenet":
        names = write_imagenet(root, num_classes=5)
        changed = root / "val" / names[-1] / f"{names[-1]}_0.JPEG"
    else:
        names = write_imagefolder(root, num_classes=4)
        changed = root / "train" / names[0] / f"{names[0]}_1.JPEG"
    before = data_fingerprint(dataset, root)
    assert data_fingerprint(dataset, root) == before
    bump(changed)
    assert data_fingerprint(dataset, root) != before


IMAGES = {
    "dataset": "imagefolder",
    "n_base": 2,
    "n_phases": 1,
    "resolution": 8,
    "in_memory": True,
    "backbone": "small_cnn",
    "mem_per_class": 2,
    "method": "lucir_cwd",
}


@pytest.mark.integration
@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_images_changed_at_the_same_path_are_not_taken_for_the_stored_ones(
    tmp_path, monkeypatch, as_zip
):
    monkeypatch.setenv("BDR_AVALANCHE_DATA", str(tmp_path / "extracted"))
    tree = tmp_path / "tree"
    names = write_imagefolder(tree, num_classes=4, train_per_class=4, size=16)
    root = zip_tree(tree, tmp_path / "tree.zip") if as_zip else tree
    first = run(tmp_path / "o", "first", dataset_root=str(root), **IMAGES)
    assert not first["base_model"]["reused"]
    # every training image now shows the next class: the same paths and names
    for index, wnid in enumerate(names):
        for k in range(4):
            path = tree / "train" / wnid / f"{wnid}_{k}.JPEG"
            class_image((index + 1) % 4, 16, 16, shift=31 * k).save(path)
            bump(path)
    if as_zip:
        zip_tree(tree, root)
    again = run(tmp_path / "o", "again", dataset_root=str(root), **IMAGES)
    assert not again["base_model"]["reused"]
    trained = run(
        tmp_path / "o", "trained", dataset_root=str(root), reuse_base=False, **IMAGES
    )
    # experience 0 is measured on the new images, as a run that trains it
    assert again["accuracy_matrix"] == trained["accuracy_matrix"]
    assert again["base_model"]["cache"] != first["base_model"]["cache"]


# -- reuse ---------------------------------------------------------------
@pytest.mark.integration
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
    assert reused["base_model"] == {
        "reused": True,
        "cache": str(cache),
        "stored_time_s": first["experience_time_s"][0],
    }
    assert reused["accuracy_matrix"] == alone["accuracy_matrix"]
    assert reused["old_to_new"] == alone["old_to_new"]
    for t in range(len(alone["accuracy_matrix"])):
        a, b = weights(tmp_path, "alone", t), weights(tmp_path, "reused", t)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), t
    saved = json.loads((tmp_path / "reused" / "results.json").read_text())
    assert saved["base_model"]["reused"] is True


@pytest.mark.integration
def test_only_settings_of_the_first_experience_share_it(tmp_path):
    first = run(tmp_path, "a", method="lucir_cwd")
    key = Path(first["base_model"]["cache"]).name
    # later phases split otherwise, a later-only hyper-parameter: same base
    assert run(tmp_path, "b", method="lucir_cwd_bdr", n_phases=2)["base_model"][
        "reused"
    ]
    again = run(tmp_path, "c", method="lucir_cwd", lucir={"margin": 0.3})
    assert again["base_model"]["reused"]
    # CwD acts in the first experience: LUCIR alone trains its own
    lucir = run(tmp_path, "d", method="lucir")
    assert not lucir["base_model"]["reused"]
    assert Path(lucir["base_model"]["cache"]).name != key
    for other in ({"seed": 7}, {"mem_per_class": 4}, {"n_base": 6, "n_phases": 2}):
        summary = run(tmp_path, f"e{len(other)}{list(other)[0]}", method="lucir_cwd",
                      **other)  # fmt: skip
        assert not summary["base_model"]["reused"], other


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def stored_time(cache: Path, seconds: float) -> None:
    """Make the entry say its experience took ``seconds`` to train."""
    state = torch.load(cache, weights_only=True)
    state["times"] = [seconds]
    torch.save(state, cache)


@pytest.mark.integration
def test_a_reused_run_reports_the_time_it_spent(tmp_path):
    first = run(tmp_path, "a", method="lucir_cwd")
    cache = Path(first["base_model"]["cache"])
    stored_time(cache, 1000.0)
    reused = run(tmp_path, "b", method="lucir_cwd_bdr")
    assert reused["base_model"] == {
        "reused": True,
        "cache": str(cache),
        "stored_time_s": 1000.0,
    }
    times = reused["experience_time_s"]
    assert times[0] != 1000.0  # the time to read the entry, not to train it
    assert reused["wall_time_s"] == pytest.approx(sum(times))
    rows = read_csv(tmp_path / "b" / "phases.csv")
    assert [float(r["time_s"]) for r in rows] == pytest.approx(times)


@pytest.mark.integration
def test_a_resumed_run_still_reports_the_reused_first_experience(tmp_path, monkeypatch):
    import bdr_avalanche.experiment.runner as runner

    first = run(tmp_path, "a", method="lucir_cwd")
    saved = runner.save_checkpoint

    def save_then_stop(path, state):  # the run stops after experience 1
        saved(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "b", method="lucir_cwd_bdr")
    monkeypatch.undo()
    resumed = run(tmp_path, "b", method="lucir_cwd_bdr")
    assert resumed["base_model"] == {
        "reused": True,
        "cache": first["base_model"]["cache"],
        "stored_time_s": first["experience_time_s"][0],
    }


@pytest.mark.integration
def test_compare_reports_the_time_each_run_spent(tmp_path):
    cfg = ExperimentConfig(output_dir=str(tmp_path), name="cmp", **TINY)
    runs = run_comparison(cfg, ["lucir_cwd", "lucir_cwd_bdr"])
    trained, reused = runs["lucir_cwd"], runs["lucir_cwd_bdr"]
    assert reused["base_model"]["reused"] and not trained["base_model"]["reused"]
    stored = trained["experience_time_s"][0]
    assert reused["base_model"]["stored_time_s"] == stored
    assert reused["experience_time_s"][0] != stored
    rows = {r["method"]: r for r in read_csv(tmp_path / "cmp" / "comparison.csv")}
    for method, summary in runs.items():
        assert float(rows[method]["wall_time_s"]) == pytest.approx(
            sum(summary["experience_time_s"]), rel=1e-6
        )
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "time (s): the time each run spent" in table
    assert (
        f"- **lucir_cwd_bdr**: first experience reused from the base-model cache "
        f"{reused['base_model']['cache']} (its training took {stored:.0f} s in the "
        "run that stored it)"
    ) in table
    assert "- **lucir_cwd**: first experience reused" not in table


# -- the cache's files ---------------------------------------------------
@pytest.mark.integration
def test_a_damaged_cache_entry_is_trained_again(tmp_path, caplog):
    first = run(tmp_path, "a", method="lucir_cwd")
    cache = Path(first["base_model"]["cache"])
    cache.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = run(tmp_path, "b", method="lucir_cwd")
    assert not again["base_model"]["reused"]
    assert again["accuracy_matrix"] == first["accuracy_matrix"]
    torch.load(cache, weights_only=True)  # stored again, whole
    (warning,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert str(cache) in warning and "cannot read" in warning
    assert f"delete that file or the folder {cache.parent}" in warning
    assert "--overwrite" not in warning  # which does not clear the cache


def test_two_writers_of_one_file_do_not_share_a_temporary_file(tmp_path):
    path = tmp_path / "entry.pt"
    with atomic_write(path, "wb") as first:
        first.write(b"1" * 1000)
        with atomic_write(path, "wb") as second:  # another run, meanwhile
            second.write(b"2" * 10)
        assert path.read_bytes() == b"2" * 10
    assert path.read_bytes() == b"1" * 1000  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["entry.pt"]


WRITER = """
import sys
from bdr_avalanche.experiment._atomic import atomic_write
with atomic_write(sys.argv[1], "wb") as file:
    print("writing", flush=True)
    sys.stdin.read()  # until killed
"""


@pytest.mark.system
def test_a_writer_killed_while_storing_leaves_no_entry_behind(tmp_path):
    first = run(tmp_path, "a", method="lucir_cwd")
    cache = Path(first["base_model"]["cache"])
    before = entries(cache.parent)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline() == "writing\n"
        (temporary,) = [p for p in cache.parent.iterdir() if p.name.startswith(".")]
        assert temporary.stat().st_size == 0
        assert remove_stale_temporaries(cache.parent) == []  # its writer is alive
        assert temporary.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert temporary.exists()  # what SIGKILL leaves
    assert entries(cache.parent) == before
    reused = run(tmp_path, "b", method="lucir_cwd_bdr")
    assert reused["base_model"]["reused"]
    assert not temporary.exists()  # removed: nobody was writing it
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]


@pytest.mark.integration
def test_a_failed_store_is_reported_and_not_named(tmp_path, caplog):
    (tmp_path / "file").write_text("a file, not a folder")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        summary = run(tmp_path, "a", method="lucir_cwd",
                      base_cache=str(tmp_path / "file" / "cache"))  # fmt: skip
    assert summary["base_model"] == {"reused": False, "cache": None}
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["base_model"] == {"reused": False, "cache": None}
    (warning,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert warning.startswith(
        "could not store the first experience in the base-model cache "
        f"{tmp_path / 'file' / 'cache'}"
    )


@pytest.mark.integration
def test_a_full_disk_while_storing_is_reported_and_not_named(
    tmp_path, caplog, monkeypatch
):
    real_fsync = os.fsync

    def full_disk(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / "cache")):
            raise OSError(28, os.strerror(28))
        return real_fsync(fd)

    monkeypatch.setattr(atomic_module.os, "fsync", full_disk)
    with caplog.at_level(logging.WARNING):
        summary = run(tmp_path, "a", method="lucir_cwd",
                      base_cache=str(tmp_path / "cache"))  # fmt: skip
    assert summary["base_model"] == {"reused": False, "cache": None}
    assert list((tmp_path / "cache").iterdir()) == []  # no temporary file left
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("could not store the first experience in the base-model cache")
        and "No space left on device" in m
        for m in messages
    ), messages
    assert not any("could not write the checkpoint" in m for m in messages)


@pytest.mark.integration
def test_no_results_folder_holds_the_cache(tmp_path):
    cache = tmp_path / "base_models"
    with pytest.raises(ConfigError, match="would hold the base-model cache"):
        run(tmp_path, "base_models", method="naive")
    assert not cache.exists()
    run(tmp_path, "a", method="lucir_cwd")
    stored = entries(cache)
    assert stored
    for method in ("naive", "lucir_cwd"):
        with pytest.raises(ConfigError, match="would hold the base-model cache"):
            run(tmp_path, "base_models", overwrite=True, method=method)
    # nor a folder inside a run, or the run's own folder
    with pytest.raises(ConfigError, match="inside the results folder"):
        run(tmp_path, "b", method="lucir_cwd", base_cache=str(tmp_path / "a" / "c"))
    with pytest.raises(ConfigError, match="would hold the base-model cache"):
        run(tmp_path, "b", method="lucir_cwd", base_cache=str(tmp_path / "b"))
    # nor a comparison named as the cache
    cfg = ExperimentConfig(output_dir=str(tmp_path), name="base_models", **TINY)
    with pytest.raises(ConfigError, match="would hold the base-model cache"):
        run_comparison(cfg, ["lucir_cwd"])
    assert not (cache / MARKER).exists()
    # overwriting a run leaves the cache's entries alone
    run(tmp_path, "a", overwrite=True, method="lucir_cwd")
    assert entries(cache) == stored
