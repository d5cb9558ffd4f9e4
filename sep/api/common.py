"""What every API call shares: the settings it was given (or the environment's), and stdout kept for
results."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

from sep.settings import Settings

Step = Callable[[str, str, str], None]  # (decision day, agent, prompt text) before each model call


def settings_or_env(settings: Settings | None) -> Settings:
    """The settings a call was given, else the environment's (SEP_*)."""
    return settings if settings is not None else Settings()


def stdout_to_stderr() -> Any:
    """Trainers and TRL print logs; a CLI's stdout must stay the report (--json)."""
    return redirect_stdout(sys.stderr)


