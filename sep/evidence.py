"""What summaries and answers cite: a summary point's text ids, the window's items an answer
cites, their judged stances, and the checks that hold an answer to them.

A summary point cites the texts it rests on ([t54, t56]); an explain prompt shows each point as an
item under the id of its first text ([t54] (+) point), and an evidence-first answer cites 1-3 of
them. The label of a derived answer follows from the cited items' judged stances (Faithful CoT), so
its confidence is theirs too. Nothing here asks a model or writes a table.
"""

from __future__ import annotations

import re

from sep.guard import clean_for_prompt
from sep.llm import Answer
from sep.shapes import NOTE_CHARS, AnswerShape
from sep.prompting import Prompt
from sep.quality import Check, date_numbers, echoed_lesson, invented_numbers, stem, words
from sep.stances import SIGN, STANCES, Judged, StanceJudge, net_stance
from sep.window import LABEL_WORDS, Text

MAX_TITLE_CHARS = 300  # one text's share of a prompt: a 100 KB title must not fill the context
MAX_EVIDENCE = 3  # cited items an evidence-first answer may count (the prompt asks for one to three)


_CITATION = re.compile(r"\[\s*(?:t|#)?\d+(?:\s*[,，]\s*(?:t|#)?\d+)*\s*\]")
_POINT = re.compile(r"^\s*(?:[-*•·]|\d+[.)])\s*")


def _supporting(point: str, titles: list[str]) -> list[int]:
    """Indexes of the titles that best support `point`: most shared words, rare words counting more.

    A word in more than a quarter of the day's titles (the company's own name) proves nothing;
    a title must share two words with the point (one if the point has no more).
    """
    import math

    stems = [{stem(w) for w in words(t) if len(w) >= 2} for t in titles]
    df: dict[str, int] = {}
    for s in stems:
        for w in s:
            df[w] = df.get(w, 0) + 1
    mine = {stem(w) for w in words(point) if len(w) >= 2}
    mine = {w for w in mine if df.get(w, 0) <= max(1, len(titles) // 4)}
    need = min(2, len(mine)) or 1
    scored = [(sum(math.log(1 + len(titles) / df[w]) for w in mine & s), i) for i, s in enumerate(stems)
              if len(mine & s) >= need]
    if not scored:
        return []
    best = max(score for score, _ in scored)
    return [i for score, i in sorted(scored, reverse=True) if score >= 0.6 * best]


def cited_points(response: str, texts: list[Text], limit: int) -> list[str]:
    """The model's points, each citing the texts it rests on, as '- point [t<id>, ...]' with real ids.

    The prompt numbers texts [1]..[n]. A citation counts only if that text shares a distinctive
    word with the point; a point without a valid citation is attributed to the texts it shares
    words with, and a point no text supports is dropped. So is a point holding a number its cited
    titles do not: another title's figure given to this story ("삼성전자의 순이익이 SK하이닉스보다
    4% 증가했다" citing "삼성전자·SK하이닉스 강세", the 4% from a KOSPI-wide headline) or none at all,
    and a point with a broken character.
    """
    titles = [t.title for t in texts]
    points: list[str] = []
    for line in response.splitlines():
        if not _POINT.match(line):
            continue
        body = _CITATION.sub("", _POINT.sub("", line)).strip(" .")
        if "\ufffd" in body:  # a character the model broke mid-byte ("노사협 �금" for 임금): the point is corrupt
            continue
        if not body or any(p.startswith(f"- {body} [") for p in points):
            continue
        numbers = {int(n) for c in _CITATION.findall(line) for n in re.findall(r"\d+", c)}
        support = _supporting(body, titles)
        cited = [n - 1 for n in sorted(numbers) if 1 <= n <= len(texts) and n - 1 in support] or support[:3]
        own = "\n".join(titles[i] for i in cited)
        if cited and not invented_numbers(body, own, date_numbers(*{texts[i].date for i in cited})):
            points.append(f"- {body} [{', '.join(f't{texts[i].id}' for i in cited)}]")
        if len(points) == limit:
            break
    return points


_CASHTAG = re.compile(r"\$([A-Za-z][A-Za-z.]{0,6})\b")


def names_others_only(text: Text, stock: str) -> bool:
    """A tweet whose cashtags name other stocks, not this one: a retweet of another company's news
    or a list ("$WLL 3 Under-the-Radar Energy Stocks" under AMT). In the five SN2 tickers' tweets, 762
    of dedup's representatives were such tweets; some still hold news of the stock (Allergan's drug
    sale under AbbVie), so they are shown last, not dropped."""
    tags = {t.upper() for t in _CASHTAG.findall(f"{text.title} {text.body or ''}")}
    return text.source == "tweet" and bool(tags) and stock.upper() not in tags


def extractive_points(texts: list[Text], limit: int, stock: str = "") -> list[str]:
    """No model: the day's first representative titles as points, each citing itself; tweets that
    name only other stocks come after the rest."""
    ranked = sorted(texts, key=lambda t: names_others_only(t, stock)) if stock else texts
    return [f"- {clean_for_prompt(t.title)[:MAX_TITLE_CHARS]} [t{t.id}]" for t in ranked[:limit]]


_STORED_CITATION = re.compile(r"\s*\[(t\d+(?:,\s*t\d+)*)\]")  # how a stored point cites: [t54, t56]


def strip_citations(summary: str) -> str:
    return _STORED_CITATION.sub("", summary)


def cited_ids(point: str) -> list[int]:
    """The text ids a stored summary point cites ('- ... [t54, t56]' → [54, 56])."""
    return [int(i) for group in _STORED_CITATION.findall(point) for i in re.findall(r"\d+", group)]


# an item as an explain prompt shows it: "[t12] title", or with its judged direction "[t12] (+) title"
ITEM_LINE = re.compile(r"^\[(t\d+)\] (?:\(([+0-])\) )?(.+)$", re.M)


def shown_items(messages: list[dict]) -> list[tuple[str, str, str]]:
    """(id, judged direction or "", text) of each item the last user turn of a stored explain prompt shows."""
    return ITEM_LINE.findall(messages[-1]["content"])


def stored_answer_shape(messages: list[dict], lang: str, explain: Prompt) -> AnswerShape | None:
    """The shape an answer to a stored explain prompt is held to, read back from the prompt: its items'
    ids, and a derived forecast's judged directions; None when the prompt shows no items."""
    shown = shown_items(messages)
    if not shown:
        return None
    words = LABEL_WORDS[lang]
    ids = tuple(dict.fromkeys(i for i, _, _ in shown))
    signs = tuple(dict.fromkeys((i, sign) for i, sign, _ in shown if sign))
    quotes = tuple((i, text) for i, _, text in shown) if signs else ()
    return AnswerShape(words["up"], words["down"], explain.label_after, explain.evidence_head, ids, signs=signs,
                       quotes=quotes)


REPEATED = 0.8  # bigram Jaccard at which a point of a later day is the same story told again


def window_items(summaries: list[tuple[str, str]]) -> list[dict]:
    """The points of a window's summaries as citable items: id (the first text a point cites), day,
    point, texts. Dedup works one day at a time, so a post repeated daily (a bot's "price target
    today", a crypto ad) would fill the window; a point that a later day's point repeats is shown
    once, on its last day."""
    items = [{"item": f"t{ids[0]}" if ids else f"p{n}", "day": d, "point": point, "texts": ids}
             for n, (d, point, ids) in enumerate(
                 (d, strip_citations(p).strip().lstrip("-•* ").strip(), cited_ids(p))
                 for d, s in summaries for p in s.splitlines()) if point]
    grams = [bigrams(i["point"]) for i in items]

    def repeated_later(k: int) -> bool:
        return any(later["day"] > items[k]["day"] and grams[k] and grams[j]
                   and len(grams[k] & grams[j]) / len(grams[k] | grams[j]) >= REPEATED
                   for j, later in enumerate(items) if j > k)

    return [item for k, item in enumerate(items) if not repeated_later(k)]


def judge_items(judge: "StanceJudge | None", items: list[dict], lang: str) -> None:
    """Each item's judged stance (its probabilities) and sign (+, -, 0), in place. Two points of one
    text share its id, so an id's stance is the mean of its points'. No model (a dry run): 0."""
    if judge is None:
        for item in items:
            item["sign"] = "0"
        return
    judged = judge.judge([" ".join(i["point"].split()) for i in items], lang)
    by_id: dict[str, list[dict]] = {}
    for item, j in zip(items, judged):
        by_id.setdefault(item["item"], []).append(j.probs)
    for item in items:
        probs = by_id[item["item"]]
        mean = {s: sum(p[s] for p in probs) / len(probs) for s in STANCES}
        item["stance"] = {s: round(v, 4) for s, v in mean.items()}
        item["sign"] = SIGN[Judged("", lang, mean).stance]


def window_stance(items: list[dict]) -> float | None:
    """The stance-only baseline's score: the mean P(positive) - P(negative) over the window's items
    (each id once), with no explanation; None when nothing was judged."""
    seen = {i["item"]: i["stance"] for i in items if i.get("stance")}
    if not seen:
        return None
    return sum(net_stance(s) for s in seen.values()) / len(seen)


def evidence_up_probability(evidence: list[dict]) -> float | None:
    """P(up) from the cited items' judged stances: 1/2 + 1/2 · mean(P(positive) - P(negative)).
    Uncalibrated (a news item says little about tomorrow's close): an experiment calibrates it on
    past days (`sep.evaluate.platt`). None when no cited item carries a stance."""
    scores = [net_stance(e["stance"]) for e in evidence if e.get("stance")]
    if not scores:
        return None
    return min(0.99, max(0.01, 0.5 + 0.5 * sum(scores) / len(scores)))


def check_evidence(answer: Answer, items: list[dict], check: Check) -> list[str]:
    """Join an evidence-first answer's cited items to the window's (`answer.evidence` becomes them)
    and return the flags they earn: an item's reason holding a number its own item does not (a number
    of another item's, moved under this id, is invented here), or one that is mostly a recalled
    lesson's words (`echoed_lesson`)."""
    answer.evidence, found = resolve_evidence(answer, items)
    known = date_numbers(check.first_day, check.last_day)
    if any(invented_numbers(own_words(e["note"]), "\n".join(i["point"] for i in items if i["item"] == e["item"]), known)
           for e in answer.evidence):
        found.append("invented_numbers")
    if check.lessons and any(echoed_lesson(e["note"], e["point"], check.lessons) for e in answer.evidence):
        found.append("echoed_lesson")
    return found


def own_words(note: str) -> str:
    """A cited reason without what is not its claim: a direction mark copied from the prompt ("(0) "),
    and a number its length cap may have cut ("YoY of 1" from "YoY of 14.00%")."""
    cut = len(note) >= NOTE_CHARS
    note = re.sub(r"^\([+0-]\)\s*", "", note)
    return re.sub(r"[\d.,]+%?$", "", note) if cut else note


def resolve_evidence(answer: Answer, items: list[dict]) -> tuple[list[dict], list[str]]:
    """An evidence-first answer's cited items joined to the window's points (day, point, text ids),
    and the flags they earn: `unknown_citation` (an id the window does not show: never trusted),
    `no_evidence` (nothing valid cited), `stance_mismatch` (the cited directions point the other way),
    `repeated_citation` (one item cited twice: a derived label counted its direction twice).
    An item whose reason quotes another item, not the one its id names, is read as the item it
    quotes (`cited_as` keeps the id it wrote), as a summary point's citations are; when items carry
    a judged direction (a derived forecast), the quoted item's direction replaces the one written
    for the wrong id, so a label built on a shifted id is checked against what it quoted. At most
    MAX_EVIDENCE items count: the prompt asks for one to three."""
    flags: list[str] = []
    cited: list[dict] = []
    for e in answer.evidence:
        points = [item for item in items if item["item"] == e["item"]]
        if not points:
            if "unknown_citation" not in flags:
                flags.append("unknown_citation")
            continue
        quoted = misquoted(e["note"], points, items)
        if quoted is not None:  # its words are another item's: read as that item, as a summary's citations are
            e = {**e, "item": quoted["item"], "cited_as": e["item"],
                 **({"direction": quoted["sign"]} if "sign" in quoted else {})}
            points = [item for item in items if item["item"] == quoted["item"]]
        if any(c["item"] == e["item"] for c in cited) and "repeated_citation" not in flags:
            flags.append("repeated_citation")
        if all(c["item"] != e["item"] for c in cited) and len(cited) < MAX_EVIDENCE:
            cited.append({**e, "day": points[0]["day"], "point": points[0]["point"],
                          "texts": sorted({t for p in points for t in p["texts"]}),
                          **({"stance": points[0]["stance"]} if "stance" in points[0] else {})})
    if not cited and items:  # a window with nothing in it leaves nothing to cite
        flags.append("no_evidence")
    net = sum(1 if c["direction"] == "+" else -1 if c["direction"] == "-" else 0 for c in cited)
    if answer.label and ((answer.label == "up" and net < 0) or (answer.label == "down" and net > 0)):
        flags.append("stance_mismatch")
    return cited, flags


def misquoted(note: str, points: list[dict], items: list[dict]) -> dict | None:
    """The item a cited reason quotes when it is not the one its id names: it shares most of its
    characters with that item and less than half as many with the named one (small models renumber
    what they copy). None when the id fits its words."""
    mine = bigrams(note)
    if len(mine) < 4:
        return None
    named = max(len(mine & bigrams(p["point"])) for p in points) / len(mine)
    others = [(len(mine & bigrams(i["point"])) / len(mine), n, i) for n, i in enumerate(items) if i not in points]
    if not others:
        return None
    best, _, item = max(others, key=lambda o: (o[0], -o[1]))
    return item if best >= 0.5 and named < best / 2 else None


def bigrams(text: str) -> set[str]:
    s = re.sub(r"\s+", "", text)
    return {s[i : i + 2] for i in range(len(s) - 1)}


