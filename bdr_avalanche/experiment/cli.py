"""Command line: ``bdr-avalanche run``, ``compare`` and ``presets``.

``run`` and ``compare`` read YAML config files (``-c``, later files win; a
path, or a preset's name, which ``bdr-avalanche presets`` lists; without
``-c``, on the digits dataset, the ``digits`` preset) and then options; the
options are generated from
:class:`~bdr_avalanche.experiment.config.ExperimentConfig`, so every config
key is also an option (``--dataset_root`` or
``--dataset-root``) and ``--help`` lists them all with their defaults and
ranges. The training keys are top-level (``--lr 0.05``); a method's own
hyper-parameters are dotted keys, the fields of its record in
:mod:`bdr_avalanche.params` (``--bdr.m1 0.6``, ``--cwd.coef 0.3``,
``--der.alpha 0.2``; YAML: ``bdr: {m1: 0.6}``). A flat name of such a
field (``--cwd_coef``, ``m1:`` in a file) is refused with the dotted key
it may mean.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

# The runner, the data and the strategies (torch, Avalanche) are imported
# inside main, after the arguments, the configuration and the results
# folder's lock are checked: --help, a bad value and a folder in use need
# only the config and run_folder modules, and are answered at once.

if TYPE_CHECKING:
    from .config import ExperimentConfig, Key

__all__ = ["build_parser", "main"]

EXAMPLES = """\
examples:
  bdr-avalanche presets                   # the presets that -c takes by name
  bdr-avalanche run                       # digits preset: LUCIR+CwD+BDR, CPU minutes
  bdr-avalanche run --method replay+bdr   # Avalanche's Replay with BDR
  bdr-avalanche compare --methods replay,replay+bdr,er_ace,er_ace+bdr --seeds 0,1,2
  bdr-avalanche run -c cifar100/b50_5phases_lucir_cwd_bdr \\
      --dataset_root data/cifar100 --download
  bdr-avalanche compare -c tiny_imagenet_cpu \\
      --dataset_root tiny-imagenet-100.zip --methods lucir,naive
"""


KEYS = """\
configuration keys:
  The training keys are top-level (--epochs 2, --lr 0.05; YAML: "lr: 0.05").
  A method's own hyper-parameters are dotted: --bdr.m1 0.6, --cwd.coef 0.3,
  --lucir.lambda_base 10, --der.alpha 0.2 (YAML: "bdr: {m1: 0.6}", or the
  dotted key "bdr.m1: 0.6"). Options override the config files. A key's
  default is its value where no config file sets it; without -c, the digits
  dataset reads the digits preset, which sets some of them ("digits without -c").
"""


def _help(spec: Key, preset: object = None) -> str:
    """An option's help: the key's text, its default, the value that the
    default preset gives it where that differs (``preset``; ``None``: the
    same) and its range."""
    hp = spec.hparam
    notes = [] if hp.default is None else [f"default: {hp.default!r}"]  # see help
    if preset is not None:
        notes.append(f"digits without -c: {preset!r}")
    if hp.bound is not None:
        notes.append(f"must be {hp.bound}")
    return f"{hp.help} [{'; '.join(notes)}]" if notes else hp.help


def _add_config_options(
    parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()
) -> None:
    """One option per config key (:func:`~.config.config_keys`): the
    top-level keys in one group, each method's record in a group of its
    own (``--bdr.m1``)."""
    from .config import GROUPS, ExperimentConfig, config_keys

    by_preset = _default_preset_values()

    groups: dict[str | None, argparse._ArgumentGroup] = {
        None: parser.add_argument_group(
            "configuration keys (override the config files; each value is read "
            "by its key's type: 5, 0.1, true/false, text as written; lists as "
            "[80,120] or 80,120; an empty value gives an optional key its default)"
        )
    }
    for f in fields(ExperimentConfig):
        if f.name in GROUPS:
            yaml_form = f"YAML: {f.name}: {{key: value}}"
            groups[f.name] = parser.add_argument_group(
                f"{f.name}.* keys, {f.metadata['help']} ({yaml_form})"
            )
    for key, spec in config_keys().items():
        if key in skip:
            continue
        flags = [f"--{key}"]
        if "_" in key:
            flags.append(f"--{key.replace('_', '-')}")
        boolean = spec.hint is bool
        groups[spec.group].add_argument(
            *flags,
            dest=key,
            metavar="BOOL" if boolean else "VALUE",
            nargs="?" if boolean else None,
            const="true" if boolean else None,
            default=argparse.SUPPRESS,
            help=_help(spec, by_preset.get(key)),
        )


def _default_preset_values() -> dict[str, object]:
    """The keys to which the digits dataset's preset, read without ``-c``,
    gives a value other than their default, with that value."""
    from .config import ExperimentConfig, default_files, read_file

    defaults = ExperimentConfig().flat()
    values: dict[str, object] = {}
    for file in default_files("digits"):
        values.update(read_file(file))
    return {key: value for key, value in values.items() if defaults[key] != value}


LINE_LIMIT = 900
"""Characters of an error message that the command prints (its start and
its end; a message may quote what it was given, and that may be huge)."""


def _cut(text: str) -> str:
    """``text`` if it fits :data:`LINE_LIMIT`, else its start and its end."""
    if len(text) <= LINE_LIMIT:
        return text
    head, tail = 2 * LINE_LIMIT // 3, LINE_LIMIT // 4
    left_out = len(text) - head - tail
    return f"{text[:head]} … ({left_out:,} characters left out) … {text[-tail:]}"


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose error line is cut to :data:`LINE_LIMIT`
    (it quotes the arguments it does not recognise)."""

    def error(self, message: str):
        """Print the usage and the (cut) message; exit with status 2."""
        super().error(_cut(message))

    def parse_args(self, args=None, namespace=None):
        """``argparse``'s, but an option that is a config key's old flat
        name (``--cwd_coef``) gets one line, as a bad config key does:
        "did you mean --cwd.coef"."""
        from .config import did_you_mean

        parsed, extra = self.parse_known_args(args, namespace)
        for arg in extra:
            option = arg.partition("=")[0]
            near = did_you_mean(option.removeprefix("--"))
            if option.startswith("--") and near:
                names = " or ".join(f"--{key}" for key in near)
                message = f"unknown option {option}; did you mean {names}?"
                self.exit(2, f"{self.prog}: error: {_cut(message)}\n")
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``compare`` alone: ``--methods`` and ``--seeds``."""
    from .config import METHODS

    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated methods to compare: bases and compositions "
        "as --method takes them (replay,replay+bdr,lucir,lucir+cwd); each "
        "pair X, X+bdr (or X+cwd) gets its paired differences "
        f"[default: {','.join(METHODS)}]",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        metavar="S1,S2,...",
        help="comma-separated seeds: run every method with each, into "
        "<method>/seed<S>/, and give the paired differences' mean ± std "
        "over the seeds [default: the seed key, one run per method]",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``bdr-avalanche`` argument parser."""
    parser = _Parser(
        prog="bdr-avalanche",
        description="Class-incremental experiments with LUCIR, CwD and BDR "
        "(and Avalanche's built-in strategies) on Avalanche streams.",
        epilog=KEYS + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("run", "train and evaluate one method; write its results folder"),
        (
            "compare",
            "run several methods on the same stream; write a table and figures",
        ),
    ):
        _add_command(commands, name, text)
    text = "list the presets, the config files that -c takes by name"
    commands.add_parser("presets", help=text, description=text)
    return parser


def _add_command(
    commands: argparse._SubParsersAction[_Parser], name: str, text: str
) -> None:
    """The sub-command ``run`` or ``compare`` and its options."""
    sub = commands.add_parser(
        name,
        help=text,
        description=text,
        epilog=KEYS + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE|PRESET",
        help="a YAML config file, or a preset's name (bdr-avalanche presets lists "
        "them: digits, cifar100/b50_5phases_lucir_cwd_bdr, ...); a path that "
        "exists is read as a path; repeat to merge several (later ones win) "
        "[default: for the digits dataset, the digits preset; else none]",
    )
    sub.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the results folder and start again (without it, an "
        "unfinished run resumes from its checkpoint and a finished one is kept)",
    )
    sub.add_argument("-v", "--verbose", action="store_true", help="debug-level logging")
    if name == "compare":
        _add_compare_options(sub)
    # compare sets `method` itself, and its `name` is the comparison's
    _add_config_options(sub, skip=("method",) if name == "compare" else ())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bdr-avalanche`` console script.

    Exit status: 0 done; 1 the run failed (data, checkpoint, a results
    folder or file that cannot be created or written, Avalanche's settings
    file, a non-finite loss); 2 bad input (options, config files, a results
    folder that is not ours or is in use); 130 / 143 interrupted by SIGINT /
    SIGTERM (run the same command to resume). Each error is one line on
    stderr.

    The options, the config files and the results folder's lock are
    checked before torch and Avalanche are imported, so that a bad value or
    a folder in use is refused at once.
    """
    from .interrupt import Interrupted, catch_signals

    try:
        with catch_signals():
            return _main(argv)
    except Interrupted as err:
        sys.stderr.write(f"bdr-avalanche: {err.message()}\n")
        sys.stderr.flush()
        return err.exit_status


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if command == "presets":
        sys.stdout.write(_presets_table())
        return 0
    files = args.pop("config")
    overwrite, verbose = args.pop("overwrite"), args.pop("verbose")
    methods, seeds = args.pop("methods", None), args.pop("seeds", None)
    _set_up_logging(verbose)
    from .config import (
        ConfigError,
        comparison_name,
        config_keys,
        default_files,
        load_config,
        parse_seeds,
        parse_value,
    )
    from .launch import check_launch
    from .run_folder import RunFolderError, check_not_in_use

    try:
        overrides = {key: parse_value(key, text) for key, text in args.items()}
        if not files:
            dataset = overrides.get("dataset", config_keys()["dataset"].hparam.default)
            files = default_files(dataset)
        cfg = load_config(files, overrides)
        seeds = () if seeds is None else parse_seeds(seeds)
        check_launch(cfg, command)
        if _rank_0():  # the process that takes the lock
            name = (
                cfg.resolved().name if command == "run" else comparison_name(cfg, seeds)
            )
            assert name is not None  # resolved() names every run
            check_not_in_use(Path(cfg.output_dir) / name)
        _import_avalanche()
    except (ConfigError, RunFolderError) as err:
        parser.exit(2, f"bdr-avalanche: error: {_one_line(err)}\n")
    except _SettingsError as err:
        parser.exit(1, f"bdr-avalanche: error: {_one_line(err)}\n")
    _execute(parser, command, cfg, methods, overwrite, seeds)
    return 0


def _presets_table() -> str:
    """The presets' names and descriptions, one a line, aligned."""
    from .config import describe, preset_names

    names = preset_names()
    width = max(map(len, names))
    return "".join(f"{name:<{width}}  {describe(name)}\n" for name in names)


def _set_up_logging(verbose: bool) -> None:
    """Log at debug level with ``-v``; else rank 0 at info level and the
    other ``torchrun`` processes at warning level (rank 0 speaks for all)."""
    level = logging.INFO if _rank_0() else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if verbose else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _execute(
    parser: argparse.ArgumentParser,
    command: str,
    cfg: ExperimentConfig,
    methods: str | None,
    overwrite: bool,
    seeds: tuple[int, ...] = (),
) -> None:
    """Run the checked ``cfg`` (``run``) or compare ``methods`` on it (with
    each of ``seeds``); exit with status 1 (the run failed) or 2 (bad
    input) and one line."""
    from ..benchmarks import DatasetError
    from ..distributed import shutdown
    from ..plugins import NonFiniteLossError
    from ._atomic import WriteError
    from .checkpoint import CheckpointError
    from .compare import run_comparison
    from .config import ConfigError
    from .run_folder import FolderWriteError, RunExistsError, RunFolderError
    from .runner import run_experiment

    try:
        if command == "run":
            run_experiment(cfg, overwrite=overwrite)
        else:
            assert methods is not None  # compare's --methods has a default
            names = [m.strip() for m in methods.split(",") if m.strip()]
            run_comparison(cfg, names, overwrite=overwrite, seeds=seeds or None)
    except (
        DatasetError,
        RunExistsError,
        CheckpointError,
        NonFiniteLossError,
        WriteError,
        FolderWriteError,  # before RunFolderError, which it is
    ) as err:
        parser.exit(1, f"bdr-avalanche: error: {_one_line(err)}\n")
    except (ConfigError, RunFolderError) as err:
        parser.exit(2, f"bdr-avalanche: error: {_one_line(err)}\n")
    finally:
        shutdown()


def _rank_0() -> bool:
    """Whether this is the only process, or rank 0 of a ``torchrun`` job
    (read from the environment: torch is not imported yet)."""
    return os.environ.get("RANK", "0") == "0"


class _SettingsError(RuntimeError):
    """Avalanche cannot create or read its settings file."""


AVALANCHE_SETTINGS = "~/.avalanche/config.json"
"""The settings file that Avalanche reads, and creates if missing, when it
is first imported (``avalanche.benchmarks.datasets.dataset_utils``)."""


def _import_avalanche() -> None:
    """Import Avalanche (and torch); raise :class:`_SettingsError`, one line
    naming HOME and the fix, where its settings file can be neither read
    nor created (a home folder that is read-only, missing or not a folder)
    instead of Avalanche's traceback."""
    settings = Path(os.path.expanduser(AVALANCHE_SETTINGS))
    home = os.path.expanduser("~")
    try:
        import avalanche.benchmarks.datasets.dataset_utils  # noqa: F401
    except OSError as err:
        # the file, or a folder on its way that cannot be made
        if err.filename is None or Path(err.filename) not in (
            settings,
            *settings.parents,
        ):
            raise
        raise _SettingsError(
            f"Avalanche cannot create its settings file {settings} "
            f"({err.strerror or err}): HOME={home} must be a folder that can "
            "be written; set HOME to one, or create that file"
        ) from None
    except json.JSONDecodeError as err:
        if not settings.is_file():
            raise
        raise _SettingsError(
            f"Avalanche cannot read its settings file {settings} (not JSON: "
            f"{err.msg}); delete it (Avalanche writes it again) or repair it"
        ) from None


def _one_line(err: Exception) -> str:
    """The error's message, on one line cut to :data:`LINE_LIMIT`; for one
    re-raised from a DataLoader worker (whose message embeds the worker's
    traceback), its last line."""
    text = str(err).strip()
    if "Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return _cut(" ".join(text.split()))  # one line, whatever the message holds


if __name__ == "__main__":
    sys.exit(main())
