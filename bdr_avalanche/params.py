"""Hyper-parameters, each written once: a field of a frozen record.

A method's hyper-parameters are one record (:class:`BDRParams`,
:class:`CwDParams`, :class:`LUCIRParams`, a baseline's), declared with
:func:`params`; each field is declared with :func:`hparam`, which gives its
default, the sentence that says what it does and its range (an
:class:`HParam`). Everything else reads the record:

- the record checks its values when it is built (``BDRParams(m1=2)``
  raises ``ValueError`` saying the range), and its docstring lists the
  fields with their defaults and ranges;
- a plugin takes the record or its fields as keyword arguments
  (``BDRPlugin(m1=0.6)``; :meth:`Params.build`) and keeps it as ``params``;
- :class:`~bdr_avalanche.LUCIR` and the baselines take the records;
- the experiment config nests them (``bdr.m1`` on the command line, a
  ``bdr:`` mapping in YAML), and ``--help`` prints their texts.

So adding a hyper-parameter to a plugin is one new field here (and the
line of the plugin that uses it). This module imports neither torch nor
Avalanche, so that the command line's ``--help`` and its checks run
before either is imported.
"""

from __future__ import annotations

import inspect
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol, TypeVar, cast

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - Python 3.10
    from typing_extensions import dataclass_transform

from ._checks import (
    check_fraction,
    check_non_negative,
    check_positive,
    check_positive_int,
)

__all__ = [
    "KINDS",
    "SEED_MAX",
    "AGEMParams",
    "BDRParams",
    "BiCParams",
    "CwDParams",
    "DERParams",
    "ERACEParams",
    "HParam",
    "ICaRLParams",
    "Kind",
    "LUCIRParams",
    "LwFParams",
    "Params",
    "TrainingParams",
    "document_hparams",
    "hparam",
    "hparams_of",
    "params",
]


def _check_non_negative_int(name: str, value: int) -> int:
    return check_positive_int(name, value, minimum=0)


SEED_MAX = 2**32 - 1
"""The largest seed NumPy's ``RandomState`` accepts."""


def _check_seed(name: str, value: int) -> int:
    """Raise ``ValueError`` unless ``value`` is an integer in
    ``[0, SEED_MAX]``, the seeds NumPy's ``RandomState`` accepts."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= SEED_MAX
    ):
        raise ValueError(f"{name} must be an integer in [0, {SEED_MAX}], got {value!r}")
    return value


def _check_milestones(name: str, value: Sequence[int]) -> list[int]:
    """Raise ``ValueError`` unless ``value`` is a sequence of increasing
    integers ``>= 1``."""
    ok = isinstance(value, Sequence) and not isinstance(value, str)
    if ok:
        ok = all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in value
        ) and list(value) == sorted(value)
    if not ok:
        raise ValueError(
            f"{name} must be a list of increasing epochs >= 1, got {value!r}"
        )
    return list(value)


class Kind(NamedTuple):
    """A range of values: how error messages state it, and its check."""

    bound: str
    """The range as messages state it, e.g. ``in [0, 1]`` or ``>= 1``."""
    check: Callable[[str, Any], Any]
    """``check(name, value)`` returns the value (converted, e.g. to float)
    or raises ``ValueError`` with a message that contains ``bound``."""


KINDS: dict[str, Kind] = {
    "fraction": Kind("in [0, 1]", check_fraction),
    "positive": Kind("> 0", check_positive),
    "non_negative": Kind(">= 0", check_non_negative),
    "positive_int": Kind(">= 1", check_positive_int),
    "non_negative_int": Kind(">= 0", _check_non_negative_int),
    "milestones": Kind("a list of increasing epochs >= 1", _check_milestones),
    "seed": Kind(f"in [0, {SEED_MAX}]", _check_seed),
}
"""The ranges a hyper-parameter may have, by name."""


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter: its default, its help text and its range.

    :param default: the default value; ``None`` means "derived from
        another value" and is then always allowed.
    :param help: one sentence saying what the value does, used verbatim by
        the docstrings and by ``--help``.
    :param kind: a key of :data:`KINDS`, or ``None`` for no range check.
    """

    default: Any
    help: str
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {', '.join(KINDS)}")
        self.check("default", self.default)

    @property
    def bound(self) -> str | None:
        """The allowed range as error messages state it (``None``: any)."""
        return None if self.kind is None else KINDS[self.kind].bound

    def check(self, name: str, value: Any) -> Any:
        """``value``, converted by the kind's check (e.g. an int to a float);
        raise ``ValueError`` naming ``name`` when it is out of range."""
        if self.kind is None or (value is None and self.default is None):
            return value
        return KINDS[self.kind].check(name, value)

    def allows(self, value: Any) -> bool:
        """Whether :meth:`check` accepts ``value``."""
        try:
            self.check("value", value)
        except ValueError:
            return False
        return True

    def doc(self) -> str:
        """The help text with the default and the range, for docstrings."""
        extra = [] if self.default is None else [f"default {self.default!r}"]
        if self.bound is not None:
            extra.append(f"must be {self.bound}")
        return "; ".join([self.help, ", ".join(extra)] if extra else [self.help]) + "."


def hparam(default: Any, help: str, kind: str | None = None) -> Any:
    """A field of a :func:`params` record (or of the experiment config):
    its default, its help text and its range (a key of :data:`KINDS`,
    ``None``: any value), kept as an :class:`HParam` in the field's
    ``metadata["hparam"]``. A list default is copied for every record."""
    hp = HParam(default, help, kind)
    metadata = {"hparam": hp}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def hparams_of(record: Any) -> dict[str, HParam]:
    """The :class:`HParam` of every field of a record (class or instance)
    declared with :func:`hparam`, by field name."""
    return {
        f.name: f.metadata["hparam"] for f in fields(record) if "hparam" in f.metadata
    }


P = TypeVar("P", bound="Params")


class Params:
    """The base of the hyper-parameter records: values checked (and
    converted, e.g. an int learning rate to a float) when built."""

    def __post_init__(self) -> None:
        for name, hp in hparams_of(self).items():
            object.__setattr__(self, name, hp.check(name, getattr(self, name)))

    @classmethod
    def build(cls: type[P], given: P | None = None, /, **values: Any) -> P:
        """``given``, else a record of ``values`` (its fields by name), as
        a plugin takes either; both, or a name that is not a field, raise
        ``TypeError`` naming the fields."""
        if given is not None:
            if values:
                raise TypeError(
                    f"give either a {cls.__name__} or its fields "
                    f"({', '.join(values)}), not both"
                )
            if not isinstance(given, cls):
                raise TypeError(
                    f"expected a {cls.__name__}, got {type(given).__name__}"
                )
            return given
        names = hparams_of(cls)
        unknown = [name for name in values if name not in names]
        if unknown:
            raise TypeError(
                f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))}; "
                f"{cls.__name__} has {', '.join(names)}"
            )
        return cls(**values)

    @classmethod
    def take(cls: type[P], source: Any) -> P:
        """A record of the same-named attributes of ``source`` (e.g. the
        experiment config, which has the fields of :class:`TrainingParams`)."""
        return cls(**{name: getattr(source, name) for name in hparams_of(cls)})


T = TypeVar("T", bound=type)
D = TypeVar("D")


class _Documented(Protocol):
    """What :func:`document_hparams` decorates: a class (or a function)
    with the record whose fields it takes as keyword arguments."""

    @property
    def PARAMS(self) -> type[Params]: ...


_DocumentedT = TypeVar("_DocumentedT", bound=_Documented)


@dataclass_transform(kw_only_default=True, frozen_default=True)
def params(cls: T) -> T:
    """Class decorator: a keyword-only, frozen :class:`Params` dataclass
    whose docstring lists its fields (:func:`document_hparams`)."""
    # dataclass() returns the class it is given, which mypy cannot tell
    cls = cast(T, dataclass(frozen=True, kw_only=True)(cls))
    return _add_param_lines(cls, hparams_of(cls))


def document_hparams(cls: _DocumentedT) -> _DocumentedT:
    """Class decorator for a class that takes the fields of its record
    ``cls.PARAMS`` as keyword arguments (a plugin): add their ``:param``
    lines to its docstring, so that Sphinx and ``help()`` show the texts
    of ``--help``."""
    return _add_param_lines(cls, hparams_of(cls.PARAMS))


def _add_param_lines(cls: D, table: Mapping[str, HParam]) -> D:
    """Put a ``:param name: help`` line per entry of ``table`` before the
    first ``:param`` line of ``cls``'s docstring (or at its end)."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    new = [_param_line(name, hp) for name, hp in table.items()]
    at = next((i for i, line in enumerate(lines) if line.startswith(":param ")), None)
    if at is None:
        lines += ["", *new]
    else:
        lines[at:at] = new
    cls.__doc__ = "\n".join(lines) + "\n"
    return cls


def _param_line(name: str, hp: HParam) -> str:
    """``:param name: ...`` wrapped at 79 columns, never inside the range."""
    nbsp = "\N{NO-BREAK SPACE}"
    text = f":param {name}: {hp.doc()}"
    if hp.bound is not None:
        text = text.replace(hp.bound, hp.bound.replace(" ", nbsp))
    wrapped = textwrap.fill(
        text,
        width=79,
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return wrapped.replace(nbsp, " ")


# -- what LUCIR and every baseline share ---------------------------------
@params
class TrainingParams(Params):
    """The training schedule, batch sizes and memory size of an experience:
    :class:`~bdr_avalanche.LUCIR`'s, and the baselines' (which train with
    the same SGD schedule; ``first_lr`` and ``first_batch_size`` are
    LUCIR's only). The experiment config has these fields as top-level
    keys."""

    epochs: int = hparam(160, "training epochs per experience", "positive_int")
    batch_size: int = hparam(
        128,
        "training mini-batch size (distributed: of all processes together)",
        "positive_int",
    )
    first_batch_size: int | None = hparam(
        None,
        "ours: training mini-batch size of the first experience (default: batch_size)",
        "positive_int",
    )
    lr: float = hparam(
        0.1,
        "SGD learning rate at the start of each experience (in the first one, "
        "first_lr replaces it when set)",
        "positive",
    )
    first_lr: float | None = hparam(
        None, "ours: learning rate of the first experience (default: lr)", "positive"
    )
    momentum: float = hparam(0.9, "SGD momentum", "fraction")
    weight_decay: float = hparam(5e-4, "SGD weight decay", "non_negative")
    milestones: list[int] = hparam(
        [80, 120],
        "epochs at which the learning rate is multiplied by lr_decay (the "
        "schedule restarts with every experience)",
        "milestones",
    )
    lr_decay: float = hparam(
        0.1, "factor of the learning rate at each milestone", "positive"
    )
    eval_batch_size: int = hparam(256, "evaluation mini-batch size", "positive_int")
    mem_per_class: int = hparam(
        20,
        "exemplars kept for every seen class, chosen by herding (our methods; "
        "the baselines' memories are described in "
        "bdr_avalanche.baselines.MEMORY_MATCHING)",
        "positive_int",
    )


# -- our methods ----------------------------------------------------------
@params
class LUCIRParams(Params):
    """:class:`~bdr_avalanche.LUCIRPlugin`'s hyper-parameters: the
    less-forget and margin-ranking losses."""

    lambda_base: float = hparam(
        5.0,
        "base weight of the less-forget term: experience t > 0 weighs it "
        "lambda = lambda_base * sqrt(K_old / K_new) (the paper: 5 on "
        "CIFAR-100, 10 on ImageNet)",
        "non_negative",
    )
    margin: float = hparam(
        0.5,
        "margin of the ranking loss between an old-class sample's "
        "ground-truth cosine score and its k highest new-class scores",
        "non_negative",
    )
    k: int = hparam(
        2,
        "number of highest-scoring new classes each old-class sample is "
        "ranked against; at most the new classes of an experience",
        "positive_int",
    )
    mr_weight: float = hparam(1.0, "weight of the margin ranking loss", "non_negative")


@params
class CwDParams(Params):
    """:class:`~bdr_avalanche.CwDPlugin`'s hyper-parameters."""

    coef: float = hparam(
        0.5,
        "weight eta of the CwD term, which is added in the first experience only",
        "non_negative",
    )
    reject_threshold: int = hparam(
        1,
        "classes with at most this many samples in a batch are skipped",
        "positive_int",
    )


@params
class BDRParams(Params):
    """:class:`~bdr_avalanche.BDRPlugin`'s hyper-parameters."""

    m1: float = hparam(
        0.8,
        "weight of the class-frequency term psi against the inverse-scatter "
        "term omega in the prior measured at the start of an experience",
        "fraction",
    )
    m2: float = hparam(
        0.8,
        "weight of the class-frequency term psi against the inverse-scatter "
        "term omega in the per-step estimate of the prior",
        "fraction",
    )
    momentum: float = hparam(
        0.99,
        "momentum with which the prior follows its per-step estimate, "
        "mu in pi <- mu * pi + (1 - mu) * estimate",
        "fraction",
    )
    tau: float = hparam(
        1.0,
        "exponent tau of the psi/omega mixture in the prior: "
        "pi = log(mixture ** tau + 1e-12)",
        "positive",
    )


# -- the baselines' own ---------------------------------------------------
@params
class ICaRLParams(Params):
    """The iCaRL baseline's hyper-parameter: a callable, so set in code
    (``make_baseline("icarl", ..., hparams={"buffer_transform": t})``),
    not in the experiment config."""

    buffer_transform: Callable | None = hparam(
        None,
        "transform applied to the exemplars, which already went through the "
        "eval transform, so it must work on tensors (e.g. crop and flip, no "
        "ToTensor or normalisation); None: exemplars are not augmented",
    )


@params
class LwFParams(Params):
    """The LwF baseline's hyper-parameters (Avalanche's ``LwF``)."""

    alpha: float = hparam(
        1.0,
        "weight of the distillation loss (Avalanche's KL divergence on the "
        "old classes' outputs, without a T**2 factor)",
        "non_negative",
    )
    temperature: float = hparam(2.0, "distillation temperature", "positive")


@params
class BiCParams(Params):
    """The BiC baseline's hyper-parameters (Avalanche's ``BiC``)."""

    val_percentage: float = hparam(
        0.1,
        "share of each class's memory held out to fit the bias layer: "
        "max(1, round(val_percentage x mem_per_class)) exemplars, at most "
        "mem_per_class - 1",
        "fraction",
    )
    T: float = hparam(2.0, "distillation temperature", "positive")
    stage_2_epochs: int = hparam(
        100,
        "epochs of stage 2, which fits the bias layer (FACIL uses 200)",
        "positive_int",
    )
    stage_2_lr: float = hparam(
        0.1,
        "SGD learning rate of stage 2 (momentum 0.9, x0.1 at epochs 50, 100 "
        "and 150, fixed by Avalanche)",
        "positive",
    )


@params
class DERParams(Params):
    """The DER baseline's hyper-parameters (Avalanche's ``DER``)."""

    alpha: float = hparam(
        0.1,
        "weight of the MSE between the outputs and the logits stored with "
        "the memory samples",
        "non_negative",
    )
    beta: float = hparam(
        0.5, "weight of the cross-entropy on the memory samples", "non_negative"
    )
    batch_size_mem: int | None = hparam(
        None,
        "memory samples per step (default: batch_size); DER replays only "
        "once its buffer holds this many",
        "positive_int",
    )


@params
class ERACEParams(Params):
    """The ER-ACE baseline's hyper-parameter (Avalanche's ``ER_ACE``)."""

    batch_size_mem: int | None = hparam(
        None,
        "memory samples per step (default: batch_size); ER-ACE replays only "
        "once its buffer holds this many",
        "positive_int",
    )


@params
class AGEMParams(Params):
    """The A-GEM baseline's hyper-parameter (Avalanche's ``AGEMPlugin``)."""

    sample_size: int | None = hparam(
        None,
        "memory samples drawn at every step, uniformly from the whole memory, "
        "for the reference gradient that the step's gradient is projected "
        "against (default: batch_size)",
        "positive_int",
    )
