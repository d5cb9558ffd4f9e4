"""The README's and docs/' examples run as written (imports against ../shared/data, beside the
checkout), and every `sep ...` command line in them names real commands and options."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands(prefix: str) -> list[str]:
    """Lines of the README's and docs' bash blocks starting with `prefix`, comments dropped
    (a line ending in a backslash is joined with the next)."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in DOCS)
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(prefix)]


def test_every_sep_command_in_the_docs_names_real_commands_and_options():
    """Parse each example as the CLI would (no command runs): a renamed flag or command fails here."""
    import shlex

    import typer.main

    from sep.cli import app

    root = typer.main.get_command(app)
    examples = readme_commands("sep ") + [c.removeprefix(".venv/bin/") for c in readme_commands(".venv/bin/sep ")]
    assert len(examples) >= 30
    for example in examples:
        args = shlex.split(example.split(" | ")[0].split(" && ")[0])[1:]
        cmd, path = root, []
        while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
            path.append(args[0])
            cmd = cmd.commands[args.pop(0)]
        assert not hasattr(cmd, "commands") or not args or args[0].startswith("-"), f"{example}: no such command"
        try:
            cmd.make_context(" ".join(["sep", *path]), list(args), resilient_parsing=False)
        except Exception as exc:  # click's usage errors, typer's own
            if type(exc).__name__ not in ("Exit",):
                raise AssertionError(f"{example}: {exc}") from None


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this checkout")
def test_every_data_import_example_runs_against_shared_data(tmp_path):
    commands = readme_commands("sep data import")
    assert len(commands) >= 6
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEP_")}
    env.update(SEP_DB=str(tmp_path / "sep.db"), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    db = sqlite3.connect(tmp_path / "sep.db")
    names = dict(db.execute("SELECT stock, name FROM stocks"))
    assert names["005930"] == "삼성전자" and names["000660"] == "SK하이닉스"
    assert db.execute("SELECT count(DISTINCT stock) FROM prices").fetchone()[0] > 140


def readme_python(section: str) -> str:
    """The first python block after a heading of the README or docs/."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in DOCS)
    return re.search(r"```python\n(.*?)```", text[text.index(f"## {section}"):], re.S)[1]


def test_the_python_api_example_runs_as_written(tmp_path):
    """The README's notebook example, in a fresh folder. It names no model, so the scripted mock
    backend answers: this checks the API as written, not a model's skill."""
    code = readme_python("Python API")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEP_")}
    env["SEP_BACKEND"] = "mock"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "67400.0 2022-06-02 down"  # the comment in the README is what it prints
    days = [line.split()[0] for line in lines if re.match(r"2022-05-3[01] (up|down|None) ", line)]
    assert days == ["2022-05-30", "2022-05-31"]
    n, accuracy, majority = lines[-1].split()
    assert n == "2" and 0 <= float(accuracy) <= 1
    assert (tmp_path / "memory" / "sep.db").exists()


def test_help_of_the_package_lists_the_api():
    done = subprocess.run([sys.executable, "-c", "import sep; help(sep)"], capture_output=True, text=True,
                          env={**os.environ, "PAGER": "cat"}, timeout=120)
    assert done.returncode == 0
    for name in ("open_memory", "import_prices", "reflect", "forecast", "train_model", "run_batch",
                 "evaluate_forecasts", "run_experiment", "audit_explanations", "deduplicate"):
        assert name in done.stdout
