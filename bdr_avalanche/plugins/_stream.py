"""Which phase a training experience is, in its stream.

CwD acts in the first experience of a stream and BDR from the second on,
which ``strategy.clock`` tells for an ordinary stream. In an online stream
(Avalanche's ``split_online_stream``) every experience of the original
stream is cut into many small mini-experiences, so the phase is the
experience of *origin*: :class:`PhaseTracker`. A mini-experience names its
origin only when the stream was split with ``access_task_boundaries=True``;
otherwise the plugins refuse it before its first step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from avalanche.benchmarks.scenarios.online import OnlineCLExperience

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["PhaseTracker"]


class PhaseTracker:
    """The phase of each training experience: ``0`` for the first.

    An ordinary experience is a phase of its own: its phase is
    ``strategy.clock.train_exp_counter``. The mini-experiences of an online
    stream belong to the phase of the experience they were cut from: the
    first training experience starts phase 0, and each mini-experience
    whose ``origin_experience`` differs from the previous one's starts the
    next phase. (A tracker that first sees a stream after its first
    training experience, e.g. a plugin added later, takes the origin's
    position in its stream, ``origin_experience.current_experience``.)

    :param plugin: the plugin's name, for the error message.
    :param role: what the plugin does with the phases, for the error
        message, e.g. "adds its term during the first experience".
    """

    def __init__(self, plugin: str, role: str) -> None:
        self.plugin = plugin
        self.role = role
        self.index: int | None = None
        """The phase of the last training experience seen."""
        self._origin: int | None = None

    def update(self, strategy: SupervisedTemplate) -> int:
        """The phase of ``strategy.experience``, the experience about to be
        trained (call once per training experience, before its first step).

        :raises ValueError: for an online mini-experience that does not
            name its experience of origin.
        """
        experience = strategy.experience
        counter = strategy.clock.train_exp_counter
        if not isinstance(experience, OnlineCLExperience):
            self.index, self._origin = counter, None
            return counter
        origin = self._origin_of(experience)
        if counter == 0:
            self.index = 0
        elif self.index is None:
            self.index = origin
        elif origin != self._origin:
            self.index += 1
        self._origin = origin
        return self.index

    def _origin_of(self, experience: OnlineCLExperience) -> int:
        fix = (
            "split the stream with "
            "split_online_stream(..., access_task_boundaries=True)"
        )
        if not experience.access_task_boundaries:
            raise ValueError(
                f"{self.plugin} {self.role} of the original stream, and an online "
                "mini-experience tells which experience it was cut from only with "
                f"task boundaries: {fix}"
            )
        origin = experience.origin_experience
        if origin is None:
            raise ValueError(
                f"{self.plugin} {self.role} of the original stream, and this online "
                f"mini-experience has no origin_experience: {fix}"
            )
        return int(origin.current_experience)
