"""The map in `sep`'s docstring is how a newcomer finds a stage: it must name every module and
every table each one writes, and its rows are floors the imports respect, so it can't go stale."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sep

SEP = Path(sep.__file__).parent
WRITES = re.compile(r"(?:INSERT (?:OR \w+ )?INTO|(?<!DO )UPDATE|DELETE FROM) \[?(\w+)|\.table\(\"(\w+)\"\)\.(?:insert|upsert)")


def _modules() -> dict[str, list[Path]]:
    """sep's modules (a package such as sep.backends is one module) → their source files."""
    found = {p.stem: [p] for p in SEP.glob("*.py") if p.stem not in ("__init__", "__main__")}
    for pkg in SEP.iterdir():
        if (pkg / "__init__.py").exists() and pkg.name != "sample":  # sample is data with a reader
            found[pkg.name] = sorted(pkg.rglob("*.py"))
    return found


def _floors() -> dict[str, int]:
    """module → its row in the map, top row 0."""
    floors: dict[str, int] = {}
    for line in sep.__doc__.splitlines():
        m = re.match(r"  ([a-z_]+(?:, [a-z_]+)*) {2,}", line)
        if m:
            row = len(set(floors.values()))
            for name in m.group(1).split(", "):
                floors[name] = row
    return floors


def _imports(files: list[Path], modules: set[str]) -> set[str]:
    """The sep modules these files import, at the top or inside functions alike."""
    out = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sep":
                parts = node.module.split(".")[1:]
                names = [parts[0]] if parts else [a.name for a in node.names]
                out |= {n for n in names if n in modules}
            elif isinstance(node, ast.Import):
                out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sep.")} & modules
    return out


def test_no_module_imports_a_floor_below_it_and_no_import_cycle():
    modules = _modules()
    floors = _floors()
    graph = {name: _imports(files, set(modules)) - {name} for name, files in modules.items()}
    upward = [f"sep.{m} imports sep.{d} (row {floors[d]} is below its row {floors[m]})"
              for m, deps in graph.items() for d in deps if floors[d] > floors[m]]
    assert not upward, "\n".join(upward)
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " → ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        for d in sorted(graph[m]):
            visit(d, path + [m])
        done.add(m)

    for m in graph:
        visit(m, [])


def test_the_import_rule_catches_an_upward_import(tmp_path):
    """The check above is real: a module that imports the api from below is found."""
    (tmp_path / "window.py").write_text("def f():\n    from sep import api\n    from sep.batch import Job\n")
    assert _imports([tmp_path / "window.py"], {"api", "batch", "window"}) == {"api", "batch"}


def _rows() -> dict[str, str]:
    """module → the text of its row (continuation lines joined)."""
    rows: dict[str, str] = {}
    current: list[str] = []
    for line in sep.__doc__.splitlines():
        m = re.match(r"  ([a-z_]+(?:, [a-z_]+)*) {2,}(.*)", line)
        if m:
            current = m.group(1).split(", ")
            for name in current:
                rows[name] = m.group(2)
        elif current and line.startswith(" " * 20) and line.strip():
            for name in current:
                rows[name] += " " + line.strip()
        else:
            current = []
    return rows


def test_the_package_map_names_every_module_and_the_tables_it_writes():
    rows = _rows()
    modules = _modules()
    assert set(modules) <= set(rows), f"not in sep's docstring map: {sorted(set(modules) - set(rows))}"
    for name, files in modules.items():
        written = {a or b for path in files for a, b in WRITES.findall(path.read_text(encoding="utf-8"))}
        listed = rows[name].split("→", 1)[1] if "→" in rows[name] else ""
        missing = {t for t in written if not re.search(rf"\b{t}\b", listed)}
        assert not missing, f"sep.{name} writes {sorted(missing)}, which its row in sep's docstring doesn't name"


def test_only_the_memory_layer_writes_a_table():
    """Issue 33: every table is written by sep/memory's stores alone (the stages build typed rows and hand
    them over)."""
    for name, files in _modules().items():
        if name == "memory":
            continue
        written = {a or b for path in files for a, b in WRITES.findall(path.read_text(encoding="utf-8"))}
        assert not written, f"sep.{name} writes {sorted(written)} itself; use sep.memory's store"


SQL = re.compile(r"\.execute(?:many)?\(|\.query\(|\b(?:SELECT|INSERT|UPDATE|DELETE)\b [\w*(]")


def test_no_sql_outside_the_memory_layer():
    """Issue 33: a newcomer follows a decision without reading SQL; every statement sits in a store."""
    found = {name: [f"{path.name}:{n}" for path in files for n, line in
                    enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if SQL.search(line)]
             for name, files in _modules().items() if name != "memory"}
    assert not any(found.values()), {k: v for k, v in found.items() if v}


SETTINGS_DEFAULTS = {"trials", "window_days", "best_of", "temperature", "threads", "concurrency", "retry_temperature",
                     "summary_points", "summarizer", "explain_format", "timeout", "retries", "context", "n_ctx", "seed"}


def _literal_defaults(path: Path) -> list[str]:
    """Parameters and fields named like a setting whose default is a literal, not `default(name)`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        pairs: list[tuple[str, ast.AST]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = [(p.arg, d) for p, d in zip(positional[len(positional) - len(a.defaults):], a.defaults)]
            pairs += [(k.arg, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            pairs = [(node.target.id, node.value)]
        for name, value in pairs:
            if name not in SETTINGS_DEFAULTS or (name == "temperature" and isinstance(value, ast.Constant)
                                                 and value.value == 0.0):  # a chat model is greedy unless told
                continue
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "default":
                continue
            literal = value if not isinstance(value, ast.Call) else (value.args[0] if value.args else None)
            if isinstance(literal, ast.Constant) and literal.value is not None:
                found.append(f"{path.name}:{node.lineno} {name} = {ast.unparse(value)}")
    return found


def test_each_default_is_written_once_in_settings(tmp_path):
    """Any other signature takes `default(name)` (or None meaning "the settings' value")."""
    copies = [c for path in sorted(SEP.rglob("*.py")) if path.name != "settings.py" for c in _literal_defaults(path)]
    assert not copies, "defaults written outside Settings:\n" + "\n".join(copies)
    sample = tmp_path / "x.py"  # the check finds a copy, and accepts default(name) and None
    sample.write_text("def f(trials: int = 3, threads=default('threads'), best_of=None):\n    pass\n"
                      "class C:\n    window_days: int = Field(5, ge=1)\n")
    assert _literal_defaults(sample) == ["x.py:1 trials = 3", "x.py:4 window_days = Field(5, ge=1)"]


def test_the_wheel_lists_every_package_and_its_data():
    """setuptools is given the packages by name: a package missing from that list is missing from
    every non-editable install (sep.guard's detector once was)."""
    import tomllib

    project = tomllib.loads((SEP.parent / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = {f"sep.{p.name}" for p in SEP.iterdir() if (p / "__init__.py").exists()} | {"sep"}
    assert packages <= set(project["packages"])
    assert "head.npz" in project["package-data"]["sep.guard"]


def test_no_file_over_600_lines_no_command_file_over_400_and_no_function_over_50():
    """Issue 33's sizes: a newcomer reads a stage in one file and a step in one screen."""
    too_long = []
    for path in SEP.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        limit = 400 if path.parent.name == "cli" else 600
        if text.count("\n") > limit:
            too_long.append(f"{path.relative_to(SEP)}: {text.count(chr(10))} lines (at most {limit})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50:
                too_long.append(f"{path.relative_to(SEP)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines (at most 50)")
    assert not too_long, "\n".join(too_long)
