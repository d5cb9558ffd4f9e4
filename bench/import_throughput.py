"""Import throughput: all price files and all text files of ../shared/data into a fresh memory.

Prints rows/s for reading+writing prices (144 KRX files plus the other price sets) and texts.
Run: .venv/bin/python bench/import_throughput.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sep.ingest import import_prices, import_texts
from sep.memory import open_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    data: Path = args.data
    krx = sorted(p for p in (data / "krx-prices").glob("*.csv") if p.name != "stock_list.csv")
    others = sorted((data / "krx-prices-2023").glob("*_D.csv")) + sorted((data / "sn2" / "price").glob("*.txt"))
    texts = sorted((data / "ko-text").glob("*/*.xlsx")) + [data / "naver-board" / "discussion_005930.csv"]
    tweets = [data / "sn2" / "tweet"]

    with tempfile.TemporaryDirectory() as tmp:
        db = open_memory(Path(tmp) / "bench.db")
        for label, run in [
            (f"prices: {len(krx)} KRX files (FinanceDataReader CSV)", lambda: import_prices(db, krx)),
            (f"prices: {len(others)} QuantKang CSV + sn2 TXT files", lambda: import_prices(db, others)),
            (f"texts: {len(texts)} Naver xlsx/board files", lambda: _texts(db, texts)),
            ("texts: sn2 tweet folders (all tickers)", lambda: import_texts(db, tweets)),
        ]:
            t0 = time.perf_counter()
            reports = run()
            secs = time.perf_counter() - t0
            read = sum(r.rows_read for r in reports)
            added = sum(r.rows_added for r in reports)
            print(f"{label:55s} {read:>9,d} rows read, {added:>9,d} added in {secs:6.2f} s = {read / secs:>9,.0f} rows/s")


# Files without code= links need their stock (the KakaoBank folder's reports are about Kakao).
STOCK_OF = {"samsung": "005930", "kakaobank": "323410", "kakaobank_raw_report": "035720"}


def _texts(db, paths):
    reports = []
    for p in paths:
        stock = None if p.suffix == ".csv" else STOCK_OF.get(p.stem, STOCK_OF[p.parent.name])
        if p.name == "samsung_raw_naver_finance_news.xlsx":
            stock = None  # its links carry code=005930
        reports += import_texts(db, [p], stock=stock)
    return reports


if __name__ == "__main__":
    main()
