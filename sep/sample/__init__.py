"""The bundled demo sample (see PROVENANCE.md): real excerpts in their original formats."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def sample_dir() -> Path:
    return Path(str(files("sep.sample")))


def sample_files() -> tuple[list[Path], list[Path]]:
    """(price files, text files) of the sample."""
    folder = sample_dir()
    return [folder / "005930.csv", folder / "stock_list.csv"], [folder / "samsung_naver_finance_news_2022-05.xlsx"]
