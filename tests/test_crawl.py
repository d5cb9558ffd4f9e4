"""The board crawler, offline: its parser on a copy of the list-page markup, its resume logic
with a stand-in for the website (the one thing outside the project)."""

import pytest

from sep.crawl import crawl_board, parse_board_list


def page_html(fixtures) -> str:
    return (fixtures / "naver_board_list_005930_p1.html").read_bytes().decode("euc-kr")


def test_parser_reads_every_post_and_skips_layout_rows(fixtures):
    posts = parse_board_list(page_html(fixtures), "005930")
    assert len(posts) == 20
    newest, oldest = posts[0], posts[-1]
    assert oldest.title == "비트코인 할 걸" and oldest.nid == "165697857"
    assert oldest.posted_at == "2021.02.28 00:00"
    assert newest.posted_at > oldest.posted_at
    assert oldest.url.startswith("https://finance.naver.com/item/board_read.naver?code=005930&nid=165697857")
    assert all(p.author and p.author.startswith("user") for p in posts)
    row = oldest.as_text_row()
    assert (row.date, row.published_at, row.source) == ("2021-02-28", "2021-02-28T00:00+09:00", "naver-board")


def test_parser_counts_are_read_past_the_reply_marker(fixtures):
    posts = parse_board_list(page_html(fixtures), "005930")
    # The fixture numbers rows from the top (newest) as i = 0..19: views 100 + 97 i, agree i % 5.
    assert (posts[0].views, posts[0].agree, posts[0].disagree) == (100, 0, 0)
    assert (posts[-1].views, posts[-1].agree, posts[-1].disagree) == (100 + 97 * 19, 19 % 5, 19 % 3)
    assert (posts[-2].views, posts[-2].agree, posts[-2].disagree) == (100 + 97 * 18, 18 % 5, 18 % 3)


def test_crawl_stores_posts_and_resumes_after_a_crash(memory, fixtures):
    html = page_html(fixtures)
    calls = []

    def flaky(url: str) -> str:
        calls.append(url)
        if "page=2" in url and len(calls) == 2:
            raise ConnectionError("network down")
        return html if "page=1" in url or "page=2" in url else "<html></html>"

    with pytest.raises(ConnectionError):
        crawl_board(memory, "005930", 3, delay=0, fetch=flaky)
    assert memory.execute("SELECT count(*) FROM texts WHERE source='naver-board'").fetchone()[0] == 20
    calls.clear()
    result = crawl_board(memory, "005930", 3, delay=0, fetch=flaky)
    assert all("page=1" not in c for c in calls)  # page 1 was checkpointed
    assert result["skipped_pages"] == 1 and result["posts_added"] == 0  # page 2 repeats page 1's posts
    assert memory.execute("SELECT count(*) FROM texts").fetchone()[0] == 20
