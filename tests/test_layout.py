"""The map in `sep`'s docstring is how a newcomer finds a stage: it must name every module and
every table each one writes, so it can't go stale."""

from __future__ import annotations

import re
from pathlib import Path

import sep

SEP = Path(sep.__file__).parent
WRITES = re.compile(r"(?:INSERT (?:OR \w+ )?INTO|(?<!DO )UPDATE|DELETE FROM) \[?(\w+)|\.table\(\"(\w+)\"\)\.(?:insert|upsert)")


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
    modules = {p.stem for p in SEP.glob("*.py")} - {"__init__", "__main__"}
    assert modules <= set(rows), f"not in sep's docstring map: {sorted(modules - set(rows))}"
    for name in modules:
        written = {a or b for a, b in WRITES.findall((SEP / f"{name}.py").read_text(encoding="utf-8"))}
        listed = rows[name].split("→", 1)[1] if "→" in rows[name] else ""
        missing = {t for t in written if not re.search(rf"\b{t}\b", listed)}
        assert not missing, f"sep.{name} writes {sorted(missing)}, which its row in sep's docstring doesn't name"
