"""`sep dedup` on real excerpts: 60 board posts of 2021-02-28, 16 real news titles of 2022-04-07
(exact repeats and same-story paraphrases from different outlets) and 8 planted ad posts.

BERTopic, kiwipiepy and the packaged USE embedder run for real, so these tests are slow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sep.agents import day_texts
from sep.dedup import normalise_title
from sep.ingest import import_texts
from sep.memory import open_memory
from sep.window import Text, texts_in_window

from conftest import FIXTURES, run

pytestmark = pytest.mark.slow

PARAPHRASES = ("[속보] 삼성전자 1분기 영업이익 14조1000억…전년대비 50.3%↑", "[속보] 삼성전자, 1분기 영업익 14조1000억…전년비 50.3%↑")
DECISIONS = "SELECT id, dup_of, dup_kind, topic, flag, is_representative FROM texts ORDER BY id"


@pytest.fixture(scope="module")
def deduped(tmp_path_factory) -> tuple[Path, dict]:
    """One database with the three excerpts, deduplicated once through the CLI."""
    db_path = tmp_path_factory.mktemp("dedup") / "sep.db"
    db = open_memory(db_path)
    import_texts(db, [FIXTURES / "discussion_005930.csv", FIXTURES / "board_spam_planted.csv",
                      FIXTURES / "news_005930_2022-04-07.jsonl"], stock="005930")
    db.conn.close()
    done = run("dedup", "--stock", "005930", "--json", db=db_path, timeout=600)
    assert done.returncode == 0, done.stderr
    return db_path, json.loads(done.stdout)


def rows(db_path: Path, where: str = "1", args: tuple = ()) -> list[dict]:
    db = open_memory(db_path)
    try:
        return [dict(r) for r in db.query(f"SELECT * FROM texts WHERE {where} ORDER BY id", list(args))]
    finally:
        db.conn.close()


def test_report_counts_add_up(deduped):
    db_path, report = deduped
    all_rows = rows(db_path)
    assert report["input"] == len(all_rows) >= 75  # the import already merged rows repeated byte for byte
    assert report["exact_duplicates"] >= 5 and report["near_duplicates"] >= 1
    assert report["kept"] == sum(r["is_representative"] for r in all_rows)
    assert set(report["timings"]) == {"embedding", "umap", "hdbscan", "rest"}
    assert report["topics"] == len(report["topic_table"]) >= 2
    assert all(r["is_representative"] in (0, 1) for r in all_rows)  # every row was decided


def test_exact_duplicates_point_to_the_first_copy_of_the_day(deduped):
    db_path, _ = deduped
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in rows(db_path):
        by_key.setdefault((r["date"], normalise_title(r["title"])), []).append(r)
    repeated = [group for group in by_key.values() if len(group) > 1]
    assert repeated, "the excerpts hold exact repeats"
    for first, *later in repeated:
        assert first["dup_of"] is None or first["dup_kind"] == "near"
        root = first["dup_of"] or first["id"]
        for r in later:
            assert r["dup_of"] == root and r["dup_kind"] == "exact" and r["is_representative"] == 0


def test_same_story_paraphrase_is_merged(deduped):
    db_path, _ = deduped
    a, b = (rows(db_path, "title = ?", (t,))[0] for t in PARAPHRASES)
    assert normalise_title(a["title"]) != normalise_title(b["title"])  # not an exact duplicate
    assert b["dup_kind"] == "near"
    assert b["dup_of"] == (a["dup_of"] or a["id"])  # both lead to one surviving copy
    assert not (a["is_representative"] and b["is_representative"])


def test_planted_spam_cluster_is_flagged_and_never_representative(deduped):
    db_path, report = deduped
    spam = rows(db_path, "url LIKE 'https://example.org/spam/%'")
    assert len(spam) == 8
    assert all(r["flag"] and ":ads" in ":" + r["flag"].split(":", 1)[1] for r in spam), [r["flag"] for r in spam]
    assert all(r["is_representative"] == 0 for r in spam)
    # the cluster catches the ads no keyword names
    assert any(r["flag"] == "topic:ads" for r in spam)
    assert any(t["flag"] == "ads" for t in report["topic_table"])


def test_summaries_read_only_representatives(deduped):
    db_path, _ = deduped
    db = open_memory(db_path)
    try:
        for day in ("2021-02-28", "2022-04-07"):
            texts = day_texts(texts_in_window(db, "005930", day, day))
            assert texts and all(t.representative == 1 for t in texts)
            assert not any("example.org/spam" in (t.url or "") for t in texts)
            assert len(texts) <= 10
    finally:
        db.conn.close()


def test_day_texts_without_dedup_reads_every_distinct_text():
    texts = [Text(1, "news", "2022-05-02", None, "삼성전자 신고가", None, None),
             Text(2, "news", "2022-05-02", None, "삼성전자, 신고가!", None, None),
             Text(3, "news", "2022-05-02", None, "반도체 수출 호조", None, None)]
    assert [t.id for t in day_texts(texts)] == [1, 3]


def test_rerun_is_identical_and_incremental(deduped, tmp_path):
    db_path, first = deduped
    copy = tmp_path / "copy.db"
    shutil.copy(db_path, copy)
    for suffix in ("-wal", "-shm"):
        if Path(str(db_path) + suffix).exists():
            shutil.copy(str(db_path) + suffix, str(copy) + suffix)
    db = open_memory(copy)
    before = db.execute(DECISIONS).fetchall()
    db.conn.close()

    again = run("dedup", "--stock", "005930", "--json", db=copy, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["input"] == 0  # every day already decided: nothing to redo

    refit = run("dedup", "--stock", "005930", "--refit", "--json", db=copy, timeout=600)
    assert refit.returncode == 0, refit.stderr
    report = json.loads(refit.stdout)
    db = open_memory(copy)
    assert db.execute(DECISIONS).fetchall() == before  # same seed, same decisions
    assert report["topic_table"] == first["topic_table"]

    # a new day is transformed with the stored topic model; decided days are left alone
    import_texts(db, [FIXTURES / "generic_texts.jsonl"])
    new_ids = {r[0] for r in db.execute("SELECT id FROM texts WHERE is_representative IS NULL")}
    db.conn.close()
    assert new_ids
    incremental = run("dedup", "--stock", "005930", "--json", db=copy, timeout=600)
    assert incremental.returncode == 0, incremental.stderr
    inc = json.loads(incremental.stdout)
    assert inc["refit"] is False and inc["input"] == len(new_ids)
    db = open_memory(copy)
    assert [r for r in db.execute(DECISIONS).fetchall() if r[0] not in new_ids] == before
    assert db.execute("SELECT COUNT(*) FROM texts WHERE is_representative IS NULL").fetchone()[0] == 0
    db.conn.close()


def test_bad_input_exits_2(deduped, tmp_path):
    db_path, _ = deduped
    unknown = run("dedup", "--stock", "000660", db=db_path)
    assert unknown.returncode == 2 and "No texts of 000660" in unknown.stderr
    missing = run("dedup", "--stock", "005930", "--offtopic", str(tmp_path / "nope.toml"), db=db_path)
    assert missing.returncode == 2 and "off-topic keywords" in missing.stderr
    backwards = run("dedup", "--stock", "005930", "--start", "2022-05-02", "--end", "2022-05-01", db=db_path)
    assert backwards.returncode == 2
