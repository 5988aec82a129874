"""Avalanche loggers for a run, including Weights & Biases that never hangs.

``WandBLogger`` calls ``wandb.init`` as soon as it is built. Without an API
key that would prompt for one, and without a network an online run waits
for its init timeout; both are fatal on a cluster node. This module's
:class:`WandBLogger` (used by the CLI, and usable on its own) therefore
resolves ``mode="auto"`` to online only when an API key is configured and
otherwise to wandb's offline mode (the run directory can be uploaded later
with ``wandb sync``), bounds wandb's init and login waits, and falls back to
offline when an online start fails.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from avalanche.evaluation.metric_results import AlternativeValues, TensorImage
from avalanche.logging import (
    BaseLogger,
    CSVLogger,
    InteractiveLogger,
    TensorboardLogger,
    TextLogger,
)
from avalanche.logging import WandBLogger as _AvalancheWandBLogger
from matplotlib.figure import Figure
from PIL.Image import Image
from torch import Tensor

from .config import ExperimentConfig

__all__ = ["RunLoggers", "WandBLogger", "resolve_wandb_mode"]

AVALANCHE_PRIVATE = ("avalanche.logging.WandBLogger._log_checkpoint",)
"""The private Avalanche name this module overrides (checked by
``tests/test_avalanche_private.py``)."""

log = logging.getLogger(__name__)

WANDB_INIT_TIMEOUT_S = 30.0


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` → ``online`` when an API key is configured (``WANDB_API_KEY``
    or ``~/.netrc``), ``offline`` otherwise; ``WANDB_MODE`` in the
    environment wins over ``auto``."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if _has_wandb_key() else "offline"


class WandBLogger(_AvalancheWandBLogger):
    """Avalanche's ``WandBLogger``, working with current wandb releases and
    never waiting for a server or a key.

    Avalanche 0.6 calls ``wandb.util.generate_id`` and ``wandb.viz``, which
    wandb has removed; this class makes the run id itself and logs metric
    values without them. ``wandb.init`` runs in the resolved ``mode``
    (:func:`resolve_wandb_mode`: ``auto`` is online only with an API key,
    offline otherwise), with its init and login timeouts bounded by
    :data:`WANDB_INIT_TIMEOUT_S` unless ``settings`` or the environment
    (``WANDB_INIT_TIMEOUT``, ``WANDB_LOGIN_TIMEOUT``) set them, and an online
    start that fails is retried offline. Offline, ``resume`` is dropped: the
    same ``id`` makes ``wandb sync`` append to the run.

    The arguments are Avalanche's; ``params`` go to ``wandb.init`` (``id``,
    ``entity``, ``tags``, ``settings``, ...).

    :param mode: ``auto`` (default), ``online``, ``offline`` or
        ``disabled``; a ``mode`` in ``params`` wins.
    """

    init_kwargs: dict[str, Any] | None
    """Avalanche's: the keyword arguments of ``wandb.init``."""

    def __init__(
        self,
        project_name: str = "Avalanche",
        run_name: str = "Test",
        log_artifacts: bool = False,
        path: str | Path = "Checkpoints",
        uri: str | None = None,
        sync_tfboard: bool = False,
        save_code: bool = True,
        config: object | None = None,
        dir: str | Path | None = None,
        params: dict | None = None,
        mode: str = "auto",
    ) -> None:
        super().__init__(
            project_name=project_name,
            run_name=run_name,
            log_artifacts=log_artifacts,
            path=path,
            uri=uri,
            sync_tfboard=sync_tfboard,
            save_code=save_code,
            config=config,
            dir=dir,
            params={"mode": mode, **(params or {})},
        )

    def before_run(self) -> None:
        """Start the wandb run (Avalanche calls this from ``__init__`` and
        when an unpickled logger resumes)."""
        if self.wandb is None:
            self.import_wandb()
        kwargs = dict(self.init_kwargs or {})
        # the id is kept, so a logger restored from a pickle resumes the run
        kwargs["id"] = (
            kwargs.get("id") or os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)
        )
        kwargs["settings"] = _bounded_settings(self.wandb, kwargs.get("settings"))
        self.init_kwargs = kwargs
        mode = resolve_wandb_mode(kwargs.get("mode") or "auto")
        if mode == "online":
            try:
                self._init(kwargs, "online")
                return
            except Exception as err:  # wandb raises several types on network failure
                log.warning("wandb could not start online (%s); logging offline", err)
                # wandb's service keeps the failed run's id: stop it, so
                # the offline run can take the same id
                self.wandb.teardown()
            mode = "offline"
        self._init(kwargs, mode)
        if mode == "offline":
            log.info(
                "wandb is offline; upload later with: wandb sync %s", _run_dir(self)
            )

    def _init(self, kwargs: dict[str, Any], mode: str) -> None:
        # wandb.init writes into the settings it gets: a copy for each try
        kwargs = {**kwargs, "mode": mode, "settings": kwargs["settings"].model_copy()}
        if mode != "online":
            kwargs["resume"] = None  # offline wandb ignores it, with a warning
        run = self.wandb.init(**kwargs)
        if run is not None and hasattr(run, "_label"):
            run._label(repo="Avalanche")

    def close(self) -> None:
        """Finish the wandb run (flushing it to disk, or uploading it)."""
        if self.wandb is not None:
            self.wandb.finish()

    def log_single_metric(self, name, value, x_plot) -> None:
        self.step = x_plot
        if name.startswith("WeightCheckpoint"):
            if self.log_artifacts:
                self._log_checkpoint(name, value, x_plot)
            return
        if isinstance(value, AlternativeValues):
            value = value.best_supported_value(
                Image, Tensor, TensorImage, Figure, float, int
            )
        wandb = self.wandb
        if isinstance(value, Image):
            value = wandb.Image(value)
        elif isinstance(value, TensorImage):
            value = wandb.Image(np.array(value))
        elif isinstance(value, Tensor):
            histogram = np.histogram(value.view(-1).numpy())
            value = wandb.Histogram(np_histogram=histogram)
        elif not isinstance(value, (float, int, Figure)):
            return  # unsupported values
        wandb.log({name: value}, step=self.step)


def _bounded_settings(wandb: Any, settings: Any) -> Any:
    """A copy of ``settings`` (a ``wandb.Settings``, a dict or ``None``) whose
    init and login timeouts are :data:`WANDB_INIT_TIMEOUT_S` unless it or
    the environment sets them."""
    if settings is None:
        settings = wandb.Settings()
    elif isinstance(settings, dict):
        settings = wandb.Settings(**settings)
    else:
        settings = settings.model_copy()
    for name in ("init_timeout", "login_timeout"):
        explicit = name in settings.model_fields_set
        if not explicit and f"WANDB_{name.upper()}" not in os.environ:
            setattr(settings, name, WANDB_INIT_TIMEOUT_S)
    return settings


class RunLoggers:
    """The Avalanche loggers a config asks for, writing into ``run_dir``.

    ``loggers`` go to the evaluation plugin; :meth:`log_results` sends the
    final figures and tables to wandb as an artifact; :meth:`close` flushes
    files and finishes the wandb run.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        resume_after: int | None = None,
        wandb_id: str | None = None,
    ) -> None:
        self.loggers: list[BaseLogger] = []
        self._files: list[TextIO] = []
        self.wandb: WandBLogger | None = None
        if cfg.interactive:
            self.loggers.append(InteractiveLogger())
        if cfg.text_log:
            # line-buffered: what the log says is on disk, even after SIGKILL
            file = open(run_dir / "log.txt", "a", buffering=1)  # noqa: SIM115
            self._files.append(file)
            if resume_after is not None:
                print(f"-- resumed after experience {resume_after - 1}", file=file)
            self.loggers.append(TextLogger(file))
        if cfg.csv_log:
            kept = _csv_rows(run_dir / "csv", resume_after)
            csv_logger = CSVLogger(str(run_dir / "csv"))
            for file, rows in (
                (csv_logger.training_file, kept[0]),
                (csv_logger.eval_file, kept[1]),
            ):
                file.writelines(rows)
                file.flush()
            self.loggers.append(csv_logger)
        if cfg.tensorboard:
            self.loggers.append(TensorboardLogger(str(run_dir / "tensorboard")))
        if cfg.wandb:
            self.wandb = _make_wandb_logger(cfg, run_dir, wandb_id)
            if self.wandb is not None:
                self.loggers.append(self.wandb)

    @property
    def wandb_id(self) -> str | None:
        """The wandb run's id, to resume the same run after an interruption."""
        run = None if self.wandb is None else self.wandb.wandb.run
        return None if run is None else run.id

    def log_results(self, files: Iterable[Path], summary: dict[str, Any]) -> None:
        """Log ``summary`` to the wandb run summary, images among ``files``
        as wandb images, and all ``files`` as one ``results`` artifact."""
        if self.wandb is None:
            return
        wandb = self.wandb.wandb
        run = wandb.run
        files = [Path(f) for f in files]
        run.summary.update(summary)
        images = {f.stem: wandb.Image(str(f)) for f in files if f.suffix == ".png"}
        if images:
            run.log(images)
        for file in files:
            if file.suffix == ".csv":
                header, *rows = _read_csv(file)
                run.log({file.stem: wandb.Table(columns=header, data=rows)})
        artifact = wandb.Artifact(f"results-{run.id}", type="results")
        for file in files:
            artifact.add_file(str(file))
        run.log_artifact(artifact)

    def flush(self) -> None:
        """Write what the file loggers hold to disk."""
        for file in self._files:
            file.flush()
        for logger in self.loggers:
            if isinstance(logger, TensorboardLogger):
                logger.writer.flush()

    def close(self) -> None:
        """Flush and close the files; finish the wandb run."""
        for file in self._files:
            file.close()
        for logger in self.loggers:
            if isinstance(logger, TensorboardLogger):
                logger.writer.close()
            elif isinstance(logger, CSVLogger):
                logger.close()
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


def _csv_rows(folder: Path, resume_after: int | None) -> tuple[list[str], list[str]]:
    """Data rows of the CSV logger's two files that belong to experiences
    before ``resume_after`` (Avalanche's ``CSVLogger`` truncates its files
    when it starts; a resumed run writes these rows back). Rows of the
    interrupted experience are dropped: it is trained again."""
    if resume_after is None:
        return [], []
    kept: list[list[str]] = []
    # training_results.csv: training_exp first; eval_results.csv: second.
    for name, column in (("training_results.csv", 0), ("eval_results.csv", 1)):
        path = folder / name
        lines = path.read_text().splitlines(keepends=True)[1:] if path.exists() else []
        kept.append([line for line in lines if _exp_id(line, column) < resume_after])
    return kept[0], kept[1]


def _exp_id(line: str, column: int) -> float:
    """The experience id in ``column`` of a CSV line (inf if there is none)."""
    field = line.split(",")[column].strip()
    return int(field) if field.isdigit() else float("inf")


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as file:
        return list(csv.reader(file))


def _make_wandb_logger(
    cfg: ExperimentConfig, run_dir: Path, run_id: str | None = None
) -> WandBLogger | None:
    """The config's wandb logger (``None`` when disabled); the mode and the
    offline fallback are :class:`WandBLogger`'s."""
    mode = resolve_wandb_mode(cfg.wandb_mode)
    if mode == "disabled":
        log.info("wandb is disabled (wandb_mode=disabled)")
        return None
    return WandBLogger(
        project_name=cfg.wandb_project,
        run_name=cfg.name or "run",
        save_code=False,
        config=cfg.to_dict(),
        dir=str(run_dir),
        path=str(run_dir / "wandb_checkpoints"),
        mode=mode,
        params={
            "id": run_id,  # None: a new run
            "resume": "allow" if run_id else None,  # dropped when offline
            "entity": cfg.wandb_entity,
            "tags": list(cfg.wandb_tags),
            "group": cfg.dataset,
            "job_type": cfg.method,
            "settings": {"silent": True, "console": "off"},  # timeouts bounded
        },
    )


def _run_dir(logger: WandBLogger) -> str:
    run = logger.wandb.run
    return str(Path(run.dir).parent) if run is not None else "<wandb dir>"
