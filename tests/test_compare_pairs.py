"""``compare`` over several seeds and its paired differences: which
methods pair (``X`` / ``X+bdr``, ``X`` / ``X+cwd``), the differences per
seed and their mean ± std over seeds on hand-made results (references in
plain loops), the files, the ``--seeds`` option, and one comparison on
digits whose paired differences are those of the runs' own
``results.json``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from helpers import TINY_RUN

from bdr_avalanche.experiment.cli import build_parser
from bdr_avalanche.experiment.compare import run_comparison
from bdr_avalanche.experiment.config import (
    ConfigError,
    ExperimentConfig,
    comparison_name,
    parse_seeds,
)
from bdr_avalanche.experiment.paired import (
    DIFFERENCES,
    Pair,
    find_pairs,
    mean_gradient_share,
    over_seeds,
    pair_differences,
    paired_markdown,
    write_paired_differences,
    write_seed_comparison,
)

KEYS = (
    "average_incremental_accuracy",
    "last_accuracy",
    "forgetting",
    "last_old_accuracy",
    "last_new_accuracy",
    "last_old_to_new",
)


def results(offset: float, share: list[list[float]] | None = None) -> dict:
    """A hand-made ``results.json`` record: every key of :data:`KEYS` a
    distinct value shifted by ``offset``."""
    record = {key: 0.1 * (i + 1) + offset for i, key in enumerate(KEYS)}
    record["wall_time_s"] = 10.0 + offset
    record["memory_gradient_share"] = share or [[0.0], [0.2, 0.4], [0.3, 0.5]]
    return record


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def reference_share(record: dict) -> float:
    total, count = 0.0, 0
    for t, epochs in enumerate(record["memory_gradient_share"]):
        if t == 0:
            continue
        for value in epochs:
            if value is not None and not math.isnan(value):
                total += value
                count += 1
    return total / count


def reference_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# -- pairing ---------------------------------------------------------------


def test_pairs_are_a_method_and_the_same_method_with_one_plugin():
    methods = [
        "replay",
        "replay+bdr",
        "bdr+der",
        "der",
        "lucir",
        "lucir_cwd",
        "lucir_cwd_bdr",
        "naive",
        "er_ace+cwd+bdr",
    ]
    assert find_pairs(methods) == [
        Pair("bdr", "replay", "replay+bdr"),
        Pair("bdr", "der", "bdr+der"),  # any order of the parts
        Pair("cwd", "lucir", "lucir_cwd"),  # aliases are parsed
        Pair("bdr", "lucir_cwd", "lucir_cwd_bdr"),
    ]
    assert find_pairs(["replay", "der+bdr", "lucir+cwd+bdr", "lucir"]) == []
    assert Pair("bdr", "replay", "replay+bdr").label == "replay → replay+bdr"


# -- differences -------------------------------------------------------------


def test_differences_per_seed_equal_plain_subtraction():
    by_seed = {
        0: {"replay": results(0.0), "replay+bdr": results(0.05, [[], [0.6], [0.7]])},
        7: {"replay": results(0.02), "replay+bdr": results(-0.01)},
    }
    pair = Pair("bdr", "replay", "replay+bdr")
    rows = pair_differences(pair, by_seed)
    assert [row["seed"] for row in rows] == [0, 7]
    for row, seed in zip(rows, (0, 7), strict=True):
        with_run, without = by_seed[seed]["replay+bdr"], by_seed[seed]["replay"]
        for key in KEYS:
            assert row[key] == pytest.approx(with_run[key] - without[key], abs=1e-12)
        share_with, share_without = reference_share(with_run), reference_share(without)
        assert row["memory_gradient_share_with"] == pytest.approx(share_with)
        assert row["memory_gradient_share_without"] == pytest.approx(share_without)
        assert row["memory_gradient_share"] == pytest.approx(share_with - share_without)
    assert rows[0]["memory_gradient_share_with"] == pytest.approx(0.65)
    assert set(DIFFERENCES) == set(KEYS)  # the time is no difference


def test_missing_values_give_no_difference():
    without, with_run = results(0.0), results(0.1)
    with_run["last_old_accuracy"] = None  # one experience: no old classes
    del without["memory_gradient_share"]  # a run without diagnostics
    (row,) = pair_differences(Pair("bdr", "a", "b"), {1: {"a": without, "b": with_run}})
    assert row["last_old_accuracy"] is None
    assert row["memory_gradient_share_without"] is None
    assert row["memory_gradient_share"] is None
    assert mean_gradient_share({"memory_gradient_share": [[0.0], [None, 0.4]]}) == 0.4
    assert mean_gradient_share({"memory_gradient_share": [[0.5]]}) is None


def test_mean_and_sample_std_over_seeds():
    values = [0.1, 0.4, 0.25]
    mean, std = over_seeds(values)
    assert mean == pytest.approx(sum(values) / 3)
    assert std == pytest.approx(reference_std(values))
    assert over_seeds([0.3]) == (0.3, None)  # one seed: no interval
    assert over_seeds([None, 0.2, None]) == (0.2, None)
    assert over_seeds([None]) == (None, None)


def test_one_seed_says_so_and_shows_no_interval():
    by_seed = {1993: {"der": results(0.0), "der+bdr": results(0.03)}}
    text = "\n".join(paired_markdown([Pair("bdr", "der", "der+bdr")], by_seed))
    assert "1 seed (1993), no interval" in text
    assert "±" not in text
    assert "| der → der+bdr | +3.00 | +3.00 |" in text


def test_paired_files_hold_every_seed_and_the_mean_and_std(tmp_path):
    seeds = (0, 1, 2)
    by_seed = {
        s: {
            "replay": results(0.01 * s),
            "replay+bdr": results(0.02 * s + 0.05),
            "lucir": results(0.3),
            "lucir+cwd": results(0.3 - 0.01 * s),
        }
        for s in seeds
    }
    pairs = find_pairs(list(by_seed[0]))
    files = write_paired_differences(pairs, by_seed, tmp_path, "title")
    assert [f.name for f in files] == [
        "paired_differences.md",
        "paired_differences.csv",
        "paired_differences.png",
    ]
    rows = read_csv(tmp_path / "paired_differences.csv")
    assert [(r["without"], r["with"], r["seed"]) for r in rows] == [
        (p.without, p.with_plugin, s)
        for p in pairs
        for s in ("0", "1", "2", "mean", "std")
    ]
    for pair in pairs:
        mine = {r["seed"]: r for r in rows if r["with"] == pair.with_plugin}
        for key in KEYS:
            diffs = [
                by_seed[s][pair.with_plugin][key] - by_seed[s][pair.without][key]
                for s in seeds
            ]
            for s, d in zip(seeds, diffs, strict=True):
                assert float(mine[str(s)][key]) == pytest.approx(d, abs=1e-9)
            assert float(mine["mean"][key]) == pytest.approx(sum(diffs) / 3, abs=1e-9)
            assert float(mine["std"][key]) == pytest.approx(
                reference_std(diffs), abs=1e-9
            )
    text = (tmp_path / "paired_differences.md").read_text()
    assert "3 seeds (0, 1, 2): mean ± sample standard deviation" in text
    assert "| replay → replay+bdr | +6.00 ± 1.00 |" in text
    assert "| lucir → lucir+cwd, seed 2 | -2.00 |" in text


def test_the_table_over_seeds_has_a_row_per_method_and_seed(tmp_path):
    by_seed = {s: {"naive": results(0.1 * s), "replay": results(0.2)} for s in (3, 4)}
    write_seed_comparison(by_seed, tmp_path, "t", {"naive": "no memory"})
    rows = read_csv(tmp_path / "comparison.csv")
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("naive", "3"),
        ("replay", "3"),
        ("naive", "4"),
        ("replay", "4"),
    ]
    text = (tmp_path / "comparison.md").read_text()
    std = 100 * reference_std([0.1 + 0.3, 0.1 + 0.4])
    assert f"| naive | 45.00 ± {std:.2f} |" in text
    assert "[seed 4](seed4/comparison.md)" in text and "no memory" in text


# -- options -----------------------------------------------------------------


def test_seeds_are_parsed_and_bad_ones_refused():
    assert parse_seeds("0, 1,2") == (0, 1, 2)
    assert parse_seeds("5") == (5,)
    for text, message in (
        ("", "give comma-separated integer seeds"),
        ("0,x", "give comma-separated integer seeds"),
        ("1,2,1", "lists seed 1 twice"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_seeds(text)


def test_comparison_folder_names_say_the_seeds():
    cfg = ExperimentConfig(seed=3)
    assert comparison_name(cfg, (3,)) == "compare_digits_b4_3phases_seed3"
    assert comparison_name(cfg, (5,)) == "compare_digits_b4_3phases_seed5"
    assert comparison_name(cfg, (0, 1)) == "compare_digits_b4_3phases_seeds0-1"
    named = ExperimentConfig(name="mine")
    assert comparison_name(named, (0, 1)) == "mine"


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (["replay", "ewc"], "methods='replay,ewc' is not allowed: method 'ewc'"),
        (["replay+bdr", "bdr+replay"], r"lists replay\+bdr twice"),
        ([], "give one or more methods"),
    ],
)
def test_bad_methods_are_refused_before_anything_runs(tmp_path, methods, message):
    cfg = ExperimentConfig(output_dir=str(tmp_path), **TINY_RUN)
    with pytest.raises(ConfigError, match=message):
        run_comparison(cfg, methods)
    assert not any(tmp_path.iterdir())


def test_compare_help_mentions_seeds(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--help"])
    text = capsys.readouterr().out
    assert "--seeds" in text and "replay+bdr" in text


# -- a comparison on digits -----------------------------------------------------


@pytest.mark.integration
def test_compare_over_two_seeds_writes_the_paired_differences(tmp_path):
    cfg = ExperimentConfig(
        output_dir=str(tmp_path), **{**TINY_RUN, "epochs": 1, "save_models": False}
    )
    methods = ["replay", "replay+bdr"]
    runs = run_comparison(cfg, methods, seeds=[0, 1])
    out = tmp_path / "compare_digits_b4_3phases_seeds0-1"
    for name in (
        "comparison.md",
        "comparison.csv",
        "paired_differences.md",
        "paired_differences.csv",
        "paired_differences.png",
        "seed0/comparison.md",
        "seed1/accuracy_curves.png",
    ):
        assert (out / name).is_file(), name
    own = {
        (m, s): json.loads((out / m / f"seed{s}" / "results.json").read_text())
        for m in methods
        for s in (0, 1)
    }
    assert runs["replay"] == own[("replay", 0)]  # the first seed's results
    rows = {r["seed"]: r for r in read_csv(out / "paired_differences.csv")}
    assert set(rows) == {"0", "1", "mean", "std"}
    for s in (0, 1):
        with_run, without = own[("replay+bdr", s)], own[("replay", s)]
        for key in KEYS:
            assert float(rows[str(s)][key]) == pytest.approx(
                with_run[key] - without[key], abs=1e-9
            )
        shares = reference_share(with_run), reference_share(without)
        assert float(rows[str(s)]["memory_gradient_share"]) == pytest.approx(
            shares[0] - shares[1], abs=1e-9
        )
    table = (out / "comparison.md").read_text()
    assert "Paired differences" in table and "| replay → replay+bdr |" in table
