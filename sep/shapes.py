"""The shapes an answer must take, for a backend to hold: an explanation's (label first, evidence
first, derived from judged evidence, a choice of words) and a lesson's three lines. The embedded
backend holds them with a llama.cpp grammar (GBNF), a vLLM server with a regex (structured outputs),
and an offline request file keeps the regex, from which the shape is read back."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sep.window import LABEL_WORDS

NOTE_CHARS = 60  # one cited item's reason, at most: a short quote or gloss, not a paragraph


def quote(text: str, limit: int = NOTE_CHARS) -> str:
    """How a derived answer cites an item: the item's own words on one line, cut at a word with "…"
    past `limit` characters (a grammar makes the model write them; it chooses only which items)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space >= limit // 2 else cut).rstrip() + "…"


@dataclass(frozen=True)
class AnswerShape:
    """What an answer must look like, for a backend to constrain.

    - label first: one of the two label words (`up`, `down`) on the first line, reasons after;
    - evidence first (`after`, 판단:): the heading, 1 to `max_items` lines `[id] +|- reason` citing
      only the window's `ids`, then the marker and the label;
    - derived (`signs`: each id's judged direction, "+", "-" or "0"): the same lines, each id
      written with its own direction, and the label follows from them: more "+" than "-" lines
      give `up`, more "-" give `down`, a tie leaves it to the model (Faithful CoT's answer computed
      from its reasoning, held by the grammar, so the reasons after it argue the derived label);
      with `weights` ((id, P(positive) - P(negative)), the items' judged stances) a tie goes the way
      the cited items weigh, as their confidence does: the model broke 4 of 41 ties against the
      heavier side (P(label) < 0.5). A backend that writes the label after the evidence (llama.cpp,
      transformers, the mock) applies it; a regex (vLLM) can't, and leaves a tie to the model;
      with `quotes` ((id, the item's words), every id) each line is that item's words, not the
      model's gloss: the default model's glosses garbled one cited item in six ("직원이 허락하지
      못한 팀원의 팀원 허락" for a headline thanking Samsung's staff), and a list a reader checks
      should say what the item said;
    - a choice (`choices`): exactly one of the words, nothing else (the stance of one text).
    """

    up: str
    down: str
    after: str = ""
    head: str = ""
    ids: tuple[str, ...] = ()
    max_items: int = 3
    signs: tuple[tuple[str, str], ...] = ()  # (id, "+"|"-"|"0"): a derived answer's fixed directions
    choices: tuple[str, ...] = ()
    quotes: tuple[tuple[str, str], ...] = ()  # (id, words): a derived line's words, one pair per item
    weights: tuple[tuple[str, float], ...] = ()  # (id, P(positive) - P(negative)): what breaks a derived tie

    def __post_init__(self) -> None:
        if self.signs:  # one order for one shape (by direction, then as given): what its regex reads back as
            ordered = tuple(sorted(self.signs, key=lambda s: s[1]))
            object.__setattr__(self, "signs", ordered)
            object.__setattr__(self, "ids", tuple(i for i, _ in ordered))
        if self.quotes:
            rank = {i: n for n, i in enumerate(self.ids)}
            if not self.signs or set(rank) - {i for i, _ in self.quotes}:
                raise ValueError("quotes are a derived shape's, one or more for every id")
            quotes = tuple(dict.fromkeys((i, quote(q)) for i, q in self.quotes if i in rank))
            object.__setattr__(self, "quotes", tuple(sorted(quotes, key=lambda q: rank[q[0]])))

    @classmethod
    def choice(cls, *words: str) -> "AnswerShape":
        return cls(words[0], words[-1], choices=tuple(words))

    @property
    def words(self) -> tuple[str, ...]:
        return self.choices or (self.up, self.down)

    def _item_ids(self) -> list[str]:
        return list(self.ids) or ["t0"]  # a window without items: nothing real to cite (the model writes t0)

    def _lines(self, sign: str, ids: list[str]) -> list[str]:
        """The literal lines a quoted derived answer may cite for `ids` of one direction."""
        return [f"[{i}] {sign} {q}" for i, q in self.quotes if i in ids]

    def _by_sign(self) -> dict[str, list[str]]:
        """The ids of each direction (only directions some id has)."""
        out: dict[str, list[str]] = {}
        for item, sign in self.signs:
            out.setdefault(sign, []).append(item)
        return out

    def fixed_label(self, evidence: str) -> str | None:
        """The label a derived answer's written evidence lines fix (None: a tie, or not derived)."""
        if not self.signs:
            return None
        lines = re.findall(r"^\[([^\]]+)\] ([+0-]) ", evidence, flags=re.M)[: self.max_items]
        signs = [sign for _, sign in lines]
        fixed = derived_label(signs.count("+") - signs.count("-"), self.up, self.down)
        if fixed is None and self.weights:  # a tie: the cited items' weight decides, as it sets the confidence
            weight = dict(self.weights)
            net = sum(weight.get(i, 0.0) for i in dict.fromkeys(i for i, _ in lines))
            return self.up if net > 0 else self.down if net < 0 else None
        return fixed

    def sequences(self) -> list[tuple[tuple[str, ...], str | None]]:
        """Every sequence of directions a derived answer may cite (1 to `max_items` lines), with the
        label it fixes (None: a tie, the model's choice)."""
        from itertools import product

        signs = sorted(self._by_sign())
        out = []
        for n in range(1, self.max_items + 1):
            for seq in product(signs, repeat=n):
                net = seq.count("+") - seq.count("-")
                out.append((seq, derived_label(net, self.up, self.down)))
        return out

    def gbnf(self) -> str:
        """A llama.cpp grammar for the evidence and the label (the reasons after it stay free)."""
        def lit(text: str) -> str:
            return json.dumps(text, ensure_ascii=False)

        names = {"+": "itemp", "-": "itemn", "0": "itemz"}
        if self.choices or not self.after:
            return "root ::= " + " | ".join(lit(w) for w in self.words)
        head = lit(self.head + "\n") + " " if self.head else ""
        label = "label ::= " + " | ".join(lit(w) for w in self.words)
        if self.signs:
            after = lit(self.after + " ")
            # a tie that weights break ends at the marker: the backend writes the label `fixed_label` reads
            ends = {None: "" if self.weights else "label", self.up: lit(self.up), self.down: lit(self.down)}
            alternatives = [" ".join(names[s] for s in seq) + f" {after} {ends[fixed]}".rstrip()
                            for seq, fixed in self.sequences()]
            rules = [f"root ::= {head}( " + " | ".join(alternatives) + " )"]
            for sign, ids in self._by_sign().items():
                if self.quotes:
                    rules.append(f"{names[sign]} ::= " + " | ".join(lit(line + "\n") for line in self._lines(sign, ids)))
                else:
                    rules.append(f'{names[sign]} ::= "[" ( ' + " | ".join(lit(i) for i in ids) + f' ) "] {sign} " note "\\n"')
            note = [] if self.quotes else [f"note ::= [^\\n\\[]{{1,{NOTE_CHARS}}}"]
            return "\n".join([*rules, *note, label])
        items = " ".join(["item"] + ["item?"] * (self.max_items - 1))
        return "\n".join([
            f"root ::= {head}{items} {lit(self.after + ' ')} label",
            'item ::= "[" id "] " dir " " note "\\n"',
            "id ::= " + " | ".join(lit(i) for i in self._item_ids()),
            'dir ::= "+" | "-"',
            f"note ::= [^\\n\\[]{{1,{NOTE_CHARS}}}",
            label])

    def regex(self) -> str:
        """The same shape as one regular expression (vLLM's structured outputs), reasons included."""
        label = f"({re.escape(self.up)}|{re.escape(self.down)})"
        if self.choices:
            return "(" + "|".join(re.escape(w) for w in self.choices) + ")"
        if not self.after:
            return label + r"\n[\s\S]*"
        head = re.escape(self.head) + r"\n" if self.head else ""
        if self.signs:
            items = {sign: (r"(?:" + "|".join(re.escape(line) for line in self._lines(sign, ids)) + r")\n" if self.quotes else
                            r"\[(" + "|".join(re.escape(i) for i in ids) + r")\] " + re.escape(sign) + rf" [^\n\[]{{1,{NOTE_CHARS}}}\n")
                     for sign, ids in self._by_sign().items()}
            ends = {None: label, self.up: re.escape(self.up), self.down: re.escape(self.down)}
            alternatives = ["".join(items[s] for s in seq) + re.escape(self.after) + " " + ends[fixed]
                            for seq, fixed in self.sequences()]
            return f"{head}(?:" + "|".join(alternatives) + r")\n[\s\S]*"
        ids = "|".join(re.escape(i) for i in self._item_ids())
        item = r"\[(" + ids + rf")\] [+-] [^\n\[]{{1,{NOTE_CHARS}}}\n"
        return f"{head}({item}){{1,{self.max_items}}}{re.escape(self.after)} {label}" + r"\n[\s\S]*"

    @classmethod
    def from_regex(cls, regex: str) -> "AnswerShape | None":
        """The shape `regex()` wrote (a request file's structured output), so the embedded model can
        answer it under its grammar; None for a regex sep did not write."""
        found = re.fullmatch(r"\((?P<words>(?:\\.|[^|\\()])+(?:\|(?:\\.|[^|\\()])+){2,})\)", regex)
        if found:
            return cls.choice(*(_plain(w) for w in re.split(r"(?<!\\)\|", found["words"])))
        label = r"\((?P<up>(?:\\.|[^|\\()])+)\|(?P<down>(?:\\.|[^|\\()])+)\)\\n\[\\s\\S\]\*"
        found = re.fullmatch(label, regex)
        if found:
            return cls(_plain(found["up"]), _plain(found["down"]))
        found = re.fullmatch(r"(?P<head>.*?)\(\?:(?P<body>.*)\)\\n\[\\s\\S\]\*", regex, flags=re.S)
        if found:  # derived: alternatives of item sequences, each ending with the marker and a label
            body = found["body"]
            words = re.search(r"\((?P<up>(?:\\.|[^|\\()])+)\|(?P<down>(?:\\.|[^|\\()])+)\)$", body)
            if words is None:  # every id points one way (no tie to leave open): the label pair of the word it fixes
                fixed = {_plain(w) for w in re.findall(r" ([^ ()|\\\[\]]+)(?=\||$)", body)}
                pair = next((p for p in LABEL_WORDS.values() if fixed & set(p.values())), None)
                words = {"up": re.escape(pair["up"]), "down": re.escape(pair["down"])} if pair else None
            read = _derived_lines(body)
            if read is None:
                return None
            items, quotes, marker = read
            if not (words and items and marker):
                return None
            signs = tuple(dict.fromkeys(items))
            kinds, alternatives = len({s for _, s in signs}), body.count(marker + " ")
            n = next((k for k in range(1, 10) if sum(kinds ** i for i in range(1, k + 1)) == alternatives), 3)
            return cls(_plain(words["up"]), _plain(words["down"]), _plain(marker), _plain(found["head"].removesuffix(r"\n")),
                       tuple(dict.fromkeys(i for i, _ in signs)), n, signs, quotes=quotes)
        found = re.fullmatch(r"(?P<head>.*?)\(\\\[\((?P<ids>[^()]*)\)\\\] \[\+-\] \[\^\\n\\\[\]\{1," + str(NOTE_CHARS) + r"\}\\n\)"
                             r"\{1,(?P<n>\d+)\}(?P<after>.+?) " + label, regex, flags=re.S)
        if not found:
            return None
        ids = tuple(_plain(i) for i in found["ids"].split("|"))
        head = found["head"].removesuffix(r"\n")
        return cls(_plain(found["up"]), _plain(found["down"]), _plain(found["after"]), _plain(head),
                   () if ids == ("t0",) else ids, int(found["n"]))


@dataclass(frozen=True)
class LessonShape:
    """What a reflection after a miss must look like: three lines, each after its marker (오판:, 놓침:,
    교훈:): the cited item that misled (one of the answer's `cited` ids) and why (`reasons`: direction
    or weight), the item overlooked (another of the window's `ids`, or `none`), and one general
    lesson (no digits, no brackets: no dates, ids or figures). With `kinds` the last line is one of
    them (kept as said; the lesson's kind is read for the misled item itself, `Agents.news_kind`).
    A backend holds it as it holds an answer's shape (llama.cpp grammar, vLLM regex)."""

    markers: tuple[str, str, str]
    reasons: tuple[str, str]
    none: str
    cited: tuple[str, ...]
    ids: tuple[str, ...]
    lesson_chars: int = 240
    kinds: tuple[str, ...] = ()

    def _options(self) -> tuple[list[str], list[str]]:
        cited = list(self.cited) or ["t0"]
        others = [i for i in self.ids if i not in self.cited]
        return cited, others

    def gbnf(self) -> str:
        def lit(text: str) -> str:
            return json.dumps(text, ensure_ascii=False)

        cited, others = self._options()
        over = " | ".join([*(lit(f"[{i}]") for i in others), lit(self.none)])
        return "\n".join([
            f"root ::= {lit(self.markers[0] + ' [')} misled {lit('] ')} why {lit(chr(10) + self.markers[1] + ' ')} over "
            f"{lit(chr(10) + self.markers[2] + ' ')} lesson",
            "misled ::= " + " | ".join(lit(i) for i in cited),
            "why ::= " + " | ".join(lit(r) for r in self.reasons),
            f"over ::= {over}",
            "lesson ::= " + (" | ".join(lit(k) for k in self.kinds) if self.kinds else
                             f"[^\\n\\[0-9]{{8,{self.lesson_chars}}}")])

    def regex(self) -> str:
        cited, others = self._options()
        over = "|".join([*(re.escape(f"[{i}]") for i in others), re.escape(self.none)])
        return (f"{re.escape(self.markers[0])} \\[({'|'.join(re.escape(i) for i in cited)})\\] "
                f"({'|'.join(re.escape(r) for r in self.reasons)})\\n{re.escape(self.markers[1])} ({over})\\n"
                f"{re.escape(self.markers[2])} " + (f"({'|'.join(re.escape(k) for k in self.kinds)})" if self.kinds
                                                     else f"[^\\n\\[0-9]{{8,{self.lesson_chars}}}"))

    @classmethod
    def from_regex(cls, regex: str) -> "LessonShape | None":
        found = re.fullmatch(r"(?P<m0>.+?) \\\[\((?P<cited>[^()]*)\)\\\] \((?P<reasons>[^()]*)\)\\n(?P<m1>.+?) "
                             r"\((?P<over>[^()]*)\)\\n(?P<m2>.+?) (?:\[\^\\n\\\[0-9\]\{8,(?P<n>\d+)\}|\((?P<kinds>[^()]*)\))", regex, flags=re.S)
        if not found:
            return None
        over = [_plain(o) for o in re.split(r"(?<!\\)\|", found["over"])]
        reasons = tuple(_plain(r) for r in found["reasons"].split("|"))
        if len(reasons) != 2:
            return None
        cited = tuple(_plain(c) for c in found["cited"].split("|"))
        others = tuple(o[1:-1] for o in over[:-1])
        return cls((_plain(found["m0"]), _plain(found["m1"]), _plain(found["m2"])), reasons, over[-1],
                   () if cited == ("t0",) else cited, (*cited, *others) if cited != ("t0",) else others,
                   int(found["n"] or 240), tuple(_plain(k) for k in found["kinds"].split("|")) if found["kinds"] else ())

    def parse(self, text: str) -> dict:
        """{misled, why, overlooked, lesson} of a reflection; a text without the markers (a server that
        does not hold the shape) is all lesson."""
        out: dict = {"misled": None, "why": None, "overlooked": None, "lesson": text.strip()}
        lines = {m: None for m in self.markers}
        for line in text.splitlines():
            bare = line.strip().strip("*").strip()
            for m in self.markers:
                if bare.startswith(m):
                    lines[m] = bare[len(m):].strip()
        if lines[self.markers[2]] is None:
            return out
        first = re.match(r"\[?(t\d+)\]?\s*(\S*)", lines[self.markers[0]] or "")
        if first:
            out["misled"] = first.group(1)
            out["why"] = first.group(2) if first.group(2) in self.reasons else None
        second = re.match(r"\[?(t\d+)\]?", lines[self.markers[1]] or "")
        out["overlooked"] = second.group(1) if second else None
        out["lesson"] = lines[self.markers[2]]
        return out


def _plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _derived_lines(body: str) -> tuple[list[tuple[str, str]], tuple[tuple[str, str], ...], str] | None:
    """A derived regex's cited (id, direction) pairs, its lines' quoted words (none: free notes) and
    its marker, read from the body of its alternatives; None when a quoted line is not sep's."""
    classes = list(re.finditer(r"\(\?:((?:\\.|[^\\()])*)\)\\n", body))  # quoted: (?:[t1] + words|...)\n
    if classes:
        lines = [re.fullmatch(r"\[([^\]]+)\] ([+0-]) (.+)", _plain(alt))
                 for c in classes for alt in re.findall(r"(?:\\.|[^\\|])+", c[1])]
        if not all(lines):
            return None
        return ([(line[1], line[2]) for line in lines], tuple(dict.fromkeys((line[1], line[3]) for line in lines)),
                body[classes[0].end():].split(" ", 1)[0])
    found = re.findall(r"\\\[\(([^()]*)\)\\\] (\\\+|\\-|-|0) \[\^\\n\\\[\]\{1," + str(NOTE_CHARS) + r"\}\\n", body)
    note = rf"[^\n\[]{{1,{NOTE_CHARS}}}\n"
    marker = body[body.index(note) + len(note):].split(" ", 1)[0] if note in body else ""
    return [(_plain(i), _plain(s)) for group, s in found for i in group.split("|")], (), marker


def shape_from_regex(regex: str) -> "AnswerShape | LessonShape | None":
    """The shape a request file's structured output was written from (answer or lesson), if sep wrote it."""
    return AnswerShape.from_regex(regex) or LessonShape.from_regex(regex)


def derived_label(net: int, up: str = "up", down: str = "down") -> str | None:
    """The label a derived answer's cited directions fix: more "+" than "-" → up, more "-" → down,
    a tie → None (the model decides)."""
    return up if net > 0 else down if net < 0 else None


def constrained_label(shape: AnswerShape) -> dict:
    """The `.bind()` arguments of a backend that constrains the answer itself (embedded, policy, mock)."""
    return {"answer_shape": shape}


