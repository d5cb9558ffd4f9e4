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
