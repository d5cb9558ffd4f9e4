"""The README's examples run as written (against ../shared/data, beside the checkout)."""

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


def readme_commands(prefix: str) -> list[str]:
    """Lines of the README's bash blocks starting with `prefix`, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(prefix)]


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
    """The first python block after a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
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
