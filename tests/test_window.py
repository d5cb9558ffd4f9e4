import pytest

from sep.errors import BadInput
from sep.ingest import import_texts
from sep.window import decision_window


def test_holiday_decision_matches_the_real_files(sample_memory):
    w = decision_window(sample_memory, "005930", "2022-06-01")
    assert (w.last_trading_day, w.last_close) == ("2022-05-31", 67400)
    assert (w.target_day, w.target_close) == ("2022-06-02", 66700)
    assert w.label == "down" and w.label_word == "하락" and w.is_holiday
    assert w.ret == pytest.approx(66700 / 67400 - 1)
    assert set(w.as_json()) == {"stock", "date", "last_trading_day", "last_close", "target_day",
                                "target_close", "return", "label", "texts", "withheld"}
    assert w.as_json()["texts"] == {"news": 41 + 32 + 38 + 6 + 11}  # 05-28..06-01
    assert w.as_json()["withheld"] == []  # no sample title addresses the model


def test_no_text_after_d_enters_the_window(sample_memory, fixtures):
    import_texts(sample_memory, [fixtures / "generic_texts.jsonl"])
    w = decision_window(sample_memory, "005930", "2022-06-01")
    assert all(t.date <= "2022-06-01" for t in w.texts)
    titles = {t.title for t in w.texts}
    assert "Samsung news dated June 2, the day after D" not in titles
    assert "UTC 15:00 is 00:00 KST on June 1" in titles
    later = decision_window(sample_memory, "005930", "2022-06-02")
    assert "Samsung news dated June 2, the day after D" in {t.title for t in later.texts}


def test_trading_day_decision_targets_the_next_session(sample_memory):
    w = decision_window(sample_memory, "005930", "2022-06-03")  # Friday; Monday 06-06 is Memorial Day
    assert w.last_trading_day == "2022-06-03" and w.target_day == "2022-06-07" and not w.is_holiday


def test_bad_stock_and_dates_are_bad_input(sample_memory):
    with pytest.raises(BadInput, match="Unknown stock"):
        decision_window(sample_memory, "999999", "2022-06-01")
    with pytest.raises(BadInput, match="outside the price data"):
        decision_window(sample_memory, "005930", "2021-12-31")
    with pytest.raises(BadInput, match="outside the price data"):
        decision_window(sample_memory, "005930", "2022-09-19")
    with pytest.raises(BadInput, match="not a date"):
        decision_window(sample_memory, "005930", "June 1st")
