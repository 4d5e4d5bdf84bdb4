"""Error types: user mistakes (exit 2) versus bad candidates (a failed trial).

`ConfigError` is for input the user can fix; it carries every problem found
at once.  `CandidateFailed` is for one candidate deployment that did not work;
the search records it and goes on.
"""

from __future__ import annotations

from enum import Enum


class PlannerError(Exception):
    """Base class of every error planner raises on purpose."""


class ConfigError(PlannerError):
    """The user's input is wrong. Each entry of ``errors`` is one actionable line."""

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


class BackendUnavailable(PlannerError):
    """A backend's Python package is missing; the message says how to install it."""


class FailReason(str, Enum):
    COMPILE = "compile"
    TIMEOUT = "timeout"
    OOM = "oom"
    CRASH = "crash"
    QUALITY = "quality"
    UNSUPPORTED = "unsupported"
    MEASURE = "measure"
    EARLY_EXIT = "early_exit"
    DISTILL_STOPPED = "distill_stopped"  # a staged distillation stopped a student that cannot reach the bound


class CandidateFailed(PlannerError):
    """One candidate failed; the trial is recorded as failed with ``reason``."""

    def __init__(self, reason: FailReason, message: str):
        self.reason = FailReason(reason)
        self.message = message
        super().__init__(f"{self.reason.value}: {message}")


def did_you_mean(name: str, choices) -> str:
    """'valid choices: a, b, c' with the closest match first when there is one."""
    import difflib

    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"valid choices: {', '.join(choices)}{hint}"
