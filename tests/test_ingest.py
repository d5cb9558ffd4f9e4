import shutil

import pytest

from sep.errors import BadInput
from sep.ingest import import_prices, import_texts, read_prices, read_texts
from sep.sample import sample_files

from conftest import table_digest


def test_fdr_sample_skips_weekend_and_holiday_zero_rows():
    parsed = read_prices(sample_files()[0][0])
    assert parsed.format == "fdr"
    days = {r.date for r in parsed.rows}
    assert "2022-06-01" not in days  # local elections: an all-zero row
    assert "2022-05-31" in days and "2022-06-02" in days
    assert parsed.skipped["all-zero row (weekend/holiday)"] > 80
    assert all(r.stock == "005930" and r.close > 0 for r in parsed.rows)


def test_quantkang_skips_zero_volume_halt_rows(fixtures):
    parsed = read_prices(fixtures / "005930_D.csv")
    assert parsed.format == "quantkang"
    days = {r.date for r in parsed.rows}
    assert {"2018-05-02", "2018-05-03"}.isdisjoint(days)  # the split halt
    assert "2018-05-04" in days or "2018-05-08" in days
    assert parsed.skipped["zero volume (halt)"] >= 2
    assert {r.stock for r in parsed.rows} == {"005930"}


def test_yahoo_stock_comes_from_file_name_or_flag(fixtures, tmp_path):
    assert {r.stock for r in read_prices(fixtures / "AAPL.csv").rows} == {"AAPL"}
    renamed = tmp_path / "prices.csv"
    shutil.copy(fixtures / "AAPL.csv", renamed)
    with pytest.raises(BadInput, match="--stock"):
        read_prices(renamed)
    assert {r.stock for r in read_prices(renamed, stock="aapl").rows} == {"AAPL"}


def test_sn2_txt_rebuilds_closes_whose_returns_match_yahoo(fixtures):
    sn2 = {r.date: r.close for r in read_prices(fixtures / "AAPL.txt").rows}
    yahoo = {r.date: r.close for r in read_prices(fixtures / "AAPL.csv").rows}
    days = sorted(set(sn2) & set(yahoo))
    assert len(days) > 30
    for a, b in zip(days, days[1:]):
        assert sn2[b] / sn2[a] == pytest.approx(yahoo[b] / yahoo[a], abs=2e-5)


def test_reimport_adds_nothing(memory, fixtures):
    first = import_prices(memory, [fixtures / "005930_D.csv"])[0]
    again = import_prices(memory, [fixtures / "005930_D.csv"])[0]
    assert first.rows_added > 0 and again.rows_added == 0
    t1 = import_texts(memory, [fixtures / "discussion_005930.csv"])[0]
    t2 = import_texts(memory, [fixtures / "discussion_005930.csv"])[0]
    assert t1.rows_added > 50 and t2.rows_added == 0


def test_naver_board_posts_get_kst_day_and_stock_from_links(fixtures):
    parsed = read_texts(fixtures / "discussion_005930.csv")
    assert parsed.format == "naver-board-csv"
    first = parsed.rows[0]
    assert first.stock == "005930" and first.source == "naver-board"
    assert first.published_at == "2021-02-28T00:00+09:00" and first.date == "2021-02-28"
    assert first.body


def test_news_xlsx_takes_code_from_link_and_report_needs_stock(fixtures):
    news = read_texts(sample_files()[1][0])
    assert news.format == "naver-news-xlsx" and {r.stock for r in news.rows} == {"005930"}
    assert len(news.rows) == 1243
    with pytest.raises(BadInput, match="--stock"):
        read_texts(fixtures / "samsung_raw_report_head.xlsx")
    report = read_texts(fixtures / "samsung_raw_report_head.xlsx", stock="005930")
    assert report.format == "naver-report-xlsx" and len(report.rows) == 20
    assert report.rows[0].date == "2017-07-03"


def test_tweet_folder_days_are_new_york_days(fixtures):
    parsed = read_texts(fixtures / "tweets" / "ABBV")
    assert {r.stock for r in parsed.rows} == {"ABBV"} and parsed.format == "sn2-tweets"
    # 2020-01-04T02:36:54Z is the evening of 2020-01-03 in New York.
    first = min(parsed.rows, key=lambda r: r.published_at)
    assert first.published_at.startswith("2020-01-03T21:36") and first.date == "2020-01-03"


def test_generic_jsonl_converts_utc_to_korean_day(fixtures):
    rows = read_texts(fixtures / "generic_texts.jsonl").rows
    assert [r.date for r in rows] == ["2022-05-31", "2022-06-01", "2022-06-02"]
    assert rows[2].stock == "005930"


def test_a_bad_file_among_good_ones_writes_nothing(memory, fixtures, tmp_path):
    import_prices(memory, [fixtures / "005930_D.csv"])
    before = table_digest(memory)
    junk = tmp_path / "junk.csv"
    junk.write_text("hello,world\n1,2\n", encoding="utf-8")
    with pytest.raises(BadInput, match="Unrecognised price file"):
        import_prices(memory, [fixtures / "AAPL.csv", junk])
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(BadInput, match="empty"):
        import_texts(memory, [fixtures / "discussion_005930.csv", empty])
    with pytest.raises(BadInput, match="does not exist"):
        import_texts(memory, [tmp_path / "missing.csv"])
    assert table_digest(memory) == before


def test_binary_garbage_is_refused(tmp_path):
    bad = tmp_path / "x.xlsx"
    bad.write_bytes(b"\x00\x01not a zip")
    with pytest.raises(BadInput, match="spreadsheet"):
        read_texts(bad)


@pytest.mark.parametrize("rows, says", [
    ("2022-01-03,100,101,99,100,10,0\n2022-13-04,100,101,99,100,10,0\n", "(line 2): month must be in 1..12"),
    ("2022-01-03,100,101,99,100,10,0\n2022-01-04,100,101,99,-5,10,0\n", "(line 2): a negative price or volume on 2022-01-04"),
])
def test_bad_price_rows_are_refused_with_their_line(tmp_path, rows, says):
    path = tmp_path / "005930.csv"
    path.write_text(rows)
    with pytest.raises(BadInput) as caught:
        read_prices(path)
    assert says in str(caught.value)  # a negative close is bad data, not a holiday row


def test_a_price_folder_glob_with_its_stock_list_imports_names(memory, fixtures, tmp_path):
    """`sep data import prices krx-prices/*.csv` meets stock_list.csv: it names the stocks."""
    folder = tmp_path / "krx-prices"
    folder.mkdir()
    shutil.copy(sample_files()[0][0], folder / "005930.csv")
    shutil.copy(fixtures / "stock_list.csv", folder / "stock_list.csv")
    reports = import_prices(memory, sorted(folder.glob("*.csv")))
    assert [r.format for r in reports] == ["fdr", "stock-list"]
    names = dict(memory.execute("SELECT stock, name FROM stocks").fetchall())
    assert names["005930"] == "삼성전자" and names["000660"] == "SK하이닉스" and names["TSLA"] == "TESLA"
    assert names["078600"] == "대주전자재료"  # six digits kept, leading zero and all
    assert reports[1].rows_read == 22 and reports[1].first_date is None


def test_quantkang_name_column_names_the_stock(memory, fixtures):
    import_prices(memory, [fixtures / "005930_D.csv"])
    assert memory.execute("SELECT name FROM stocks WHERE stock = '005930'").fetchone()[0] == "삼성전자"


@pytest.mark.parametrize("typed, code", [("5930", "005930"), ("A005930", "005930"), (" 005930 ", "005930"),
                                         ("aapl", "AAPL"), ("5930.0", "005930")])
def test_codes_are_normalised(typed, code):
    from sep.ingest import normalise_stock

    assert normalise_stock(typed) == code


def test_an_unknown_code_needs_new_stock(memory, fixtures, tmp_path):
    before = table_digest(memory)
    with pytest.raises(BadInput, match="00593A.*--new-stock"):
        import_prices(memory, [fixtures / "005930_D.csv"], stock="00593A")
    typo = tmp_path / "typo.jsonl"
    typo.write_text('{"stock": "SAMSUNG", "date": "2022-06-01", "title": "삼성전자 신고가"}\n', encoding="utf-8")
    with pytest.raises(BadInput, match="SAMSUNG"):
        import_texts(memory, [typo])
    assert table_digest(memory) == before
    import_prices(memory, [fixtures / "005930_D.csv"], stock="00593A", new_stock=True)
    assert memory.execute("SELECT count(*) FROM prices WHERE stock = '00593A'").fetchone()[0] > 0
    # once known (a stock list, or created before), a ticker needs no flag
    import_prices(memory, [fixtures / "stock_list.csv"])
    tsla = tmp_path / "tsla.jsonl"
    tsla.write_text('{"stock": "TSLA", "date": "2022-06-01", "title": "Tesla delivers"}\n', encoding="utf-8")
    assert import_texts(memory, [tsla])[0].rows_added == 1


def test_a_new_price_format_registers_by_name(memory, tmp_path, monkeypatch):
    """Formats are a registry (plugins add theirs through the `sep.formats` entry point group)."""
    from sep import ingest
    from sep.ingest import base

    monkeypatch.setattr(base, "PRICE_READERS", dict(base.PRICE_READERS))

    def read_semicolons(parsed, text, stock):
        for parsed.line, line in enumerate(text.splitlines()[1:], 2):
            day, close = line.split(";")
            ingest.add_price(parsed, ingest.PriceRow(stock, ingest.parse_date(day), None, None, None,
                                                      float(close.replace(",", ".")), None))

    ingest.register_format(ingest.PriceFormat("semicolon", lambda line: line.startswith("Datum;Schluss"),
                                              read_semicolons))
    path = tmp_path / "005930.csv"
    path.write_text("Datum;Schluss\n2022-05-30;67700,0\n2022-05-31;67400,0\n", encoding="utf-8")
    report = import_prices(memory, [path])[0]
    assert report.format == "semicolon" and report.rows_added == 2 and report.stocks == ["005930"]
    with pytest.raises(BadInput, match="choose one of .*semicolon"):
        read_prices(path, "nope")
