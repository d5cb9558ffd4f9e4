"""Deduplicate and filter texts before they are summarised (`sep dedup`).

Boards and news feeds are mostly repeats, spam and off-topic talk. Per (stock, day) this keeps
the top-k representative texts, in four steps:

1. exact duplicates: titles equal after NFKC, case, whitespace and punctuation folding;
2. near duplicates: same-story paraphrases, cosine similarity of embeddings >= a threshold;
3. BERTopic over what remains (kiwipiepy nouns in the CountVectorizer, multilingual embeddings),
   fitted once per stock and then only *transformed* for new days unless `refit`;
4. off-topic flags from seed keywords (`offtopic.toml`) on texts and on whole topic clusters.

`Deduplicator` orchestrates pluggable parts, BERTopic-style: the embedder, the UMAP and HDBSCAN
models, the vectorizer and the keyword rules are constructor arguments with defaults. Results
go to `texts` (dup_of, topic, flag, is_representative), `dedup_runs`, `topics` and
`topic_models` (one per fitted range, saved with BERTopic's safetensors serialization).
"""

from __future__ import annotations

import io
import json
import pickle
import re
import tempfile
import time
import tomllib
import unicodedata
import zipfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
import sqlite_utils

from sep.dedup.parts import Embedder, KoreanNouns, embedder_id, make_embedder
from sep.dedup.reducer import _TIMINGS, _timed_classes, keep_compiled, only_what_runs
from sep.errors import BadInput
from sep.guard import injection_of
from sep.memory.dedup import DedupRun, DedupStore
from sep.settings import Progress, Settings, default, invalid_setting

DEFAULT_OFFTOPIC = Path(__file__).parent.parent / "offtopic.toml"



def normalise_title(title: str) -> str:
    """The key two titles must share to be exact duplicates: NFKC, lower case, no spaces or punctuation."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", title).lower())


def __getattr__(name: str) -> Any:  # unpickling a topic model asks for these before they exist
    if name in ("TimedUMAP", "TimedHDBSCAN"):
        return dict(zip(("TimedUMAP", "TimedHDBSCAN"), _timed_classes()))[name]
    raise AttributeError(name)


_CASHTAG = re.compile(r"\$([A-Za-z]{1,6})\b")


@dataclass
class OffTopicRule:
    category: str
    keywords: list[str]
    sources: list[str]  # empty: every source
    max_cashtags: int | None = None  # more distinct $TICKERs than this: a list of stocks, not news of one
    topics: bool = True  # False: flags single texts only, never a whole topic cluster (short tweets mix in clusters)

    def match(self, source: str, text: str) -> str | None:
        if self.sources and source not in self.sources:
            return None
        if self.max_cashtags is not None:
            tickers = len({t.upper() for t in _CASHTAG.findall(text)})
            if tickers > self.max_cashtags:
                return f"{tickers} cashtags"
        low = text.lower()
        return next((k for k in self.keywords if k.lower() in low), None)


def load_offtopic(path: Path | None) -> tuple[list[OffTopicRule], float]:
    """(rules, topic_share) from a TOML file of `[category] keywords = [...] sources = [...]`."""
    path = Path(path) if path else DEFAULT_OFFTOPIC
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"Can't read the off-topic keywords {path}: {exc}") from None
    share = float(data.pop("topic_share", 0.4))
    rules = []
    for category, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("keywords"), list):
            raise BadInput(f"{path}: [{category}] needs a `keywords = [...]` list.")
        cap, topics = spec.get("max_cashtags"), spec.get("topics", True)
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise BadInput(f"{path}: [{category}] max_cashtags must be a whole number of at least 1, not {cap!r}.")
        if not isinstance(topics, bool):
            raise BadInput(f"{path}: [{category}] topics must be true or false, not {topics!r}.")
        rules.append(OffTopicRule(category, [str(k) for k in spec["keywords"]], [str(s) for s in spec.get("sources", [])],
                                  cap, topics))
    return rules, share


def save_topic_model(model: Any, embedder: str) -> bytes:
    """BERTopic's safetensors serialization (topic embeddings, c-TF-IDF, configs), zipped for one BLOB."""
    with tempfile.TemporaryDirectory() as tmp, only_what_runs():
        model.save(tmp, serialization="safetensors", save_ctfidf=True, save_embedding_model=embedder)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(Path(tmp).iterdir()):
                z.write(f, f.name)
        return buf.getvalue()


def load_topic_model(fmt: str, blob: bytes) -> Any:
    """A stored topic model; a safetensors one transforms by cosine similarity to topic embeddings."""
    with only_what_runs():
        if fmt == "pickle":  # written by sep itself before migration 0009
            return pickle.loads(blob)
        from bertopic import BERTopic

        with tempfile.TemporaryDirectory() as tmp:
            zipfile.ZipFile(io.BytesIO(blob)).extractall(tmp)
            return BERTopic.load(tmp)


# ---------------------------------------------------------------- the orchestrator


_SETTING_OF = {"top_k": "dedup_top_k", "near_threshold": "dedup_near_threshold", "min_topic_size": "dedup_min_topic_size",
               "embedder": "embedder", "seed": "seed"}


class DedupConfig(BaseModel):
    """Everything that shapes a dedup result; stored with each run (`dedup_runs.params`).

    What a user sets is the `Settings` field itself (SEP_DEDUP_*, SEP_EMBEDDER, SEP_SEED): its
    default, limits and help are written there once; the rest are BERTopic's knobs."""

    model_config = ConfigDict(extra="forbid")
    top_k: int = Settings.model_fields["dedup_top_k"]
    near_threshold: float = Settings.model_fields["dedup_near_threshold"]
    min_topic_size: int = Settings.model_fields["dedup_min_topic_size"]
    n_neighbors: int = Field(15, ge=2, description="UMAP neighbours.")
    n_components: int = Field(5, ge=1, description="UMAP dimensions.")
    body_chars: int = Field(200, ge=0, description="How much of a body joins the title for embedding and topics.")
    embedder: str = Settings.model_fields["embedder"]
    offtopic: str | None = Field(None, description="TOML of off-topic seeds; None: the packaged offtopic.toml.")
    seed: int = Settings.model_fields["seed"]

    def __init__(self, **values: Any) -> None:
        """A bad value is one sentence naming the setting, as `Settings.with_overrides` says it."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise invalid_setting(exc, _SETTING_OF.get(str(exc.errors()[0]["loc"][0]))) from None

    @classmethod
    def from_settings(cls, cfg: Settings) -> "DedupConfig":
        return cls(top_k=cfg.dedup_top_k, near_threshold=cfg.dedup_near_threshold, min_topic_size=cfg.dedup_min_topic_size,
                   embedder=cfg.embedder, offtopic=str(cfg.offtopic) if cfg.offtopic else None, seed=cfg.seed)


@dataclass
class Row:
    id: int
    date: str
    source: str
    title: str
    body: str | None
    dup_of: int | None = None
    dup_kind: str | None = None
    topic: int = -1
    flag: str | None = None
    is_representative: int = 0
    injection: str | None = None  # addresses the model (sep.guard): left out of every step, never a copy's weight

    @property
    def doc(self) -> str:
        return self.title if not self.body else f"{self.title} {self.body}"


@dataclass
class DedupReport:
    stock: str
    start: str | None
    end: str | None
    input: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    off_topic: int = 0
    injections: int = 0  # texts addressing the model (sep.guard), withheld from every prompt
    kept: int = 0
    topics: int = 0
    days: int = 0
    refit: bool = False
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    topic_table: list[dict] = field(default_factory=list)
    kept_stories: list[dict] = field(default_factory=list)  # per day: each representative and the copies it stands for
    run: int | None = None

    def as_json(self) -> dict:
        return asdict(self)


class Deduplicator:
    """Dedup, cluster and flag one stock's texts; incremental over days, deterministic with a seed."""

    def __init__(self, db: sqlite_utils.Database, config: DedupConfig | None = None, *,
                 embedder: Embedder | None = None, umap_model: Any = None, hdbscan_model: Any = None,
                 vectorizer_model: Any = None, rules: list[OffTopicRule] | None = None, threads: int = default("threads"),
                 cache_dir: Path = default("cache_dir"), progress: Progress | None = None) -> None:
        """Every sub-model can be swapped, as in BERTopic: `umap_model` (any fit/transform
        reducer), `hdbscan_model` (any clusterer with `labels_`), `vectorizer_model` (a
        CountVectorizer), `rules` (off-topic keyword rules). Unset, the defaults of `config` apply.
        The default UMAP's compiled code is kept under `cache_dir`/numba for the next process."""
        self.db, self.store = db, DedupStore(db)
        self.config = config or DedupConfig()
        self.rules, self.topic_share = load_offtopic(Path(self.config.offtopic) if self.config.offtopic else None)
        if rules is not None:
            self.rules = rules
        self._embedder = embedder
        self.umap_model, self.hdbscan_model, self.vectorizer_model = umap_model, hdbscan_model, vectorizer_model
        self.threads = threads
        self.cache_dir = Path(cache_dir)
        self.progress = progress or (lambda stage, done, total: None)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.config.embedder, self.threads)
        return self._embedder

    # -- reading

    def _rows(self, stock: str, start: str | None, end: str | None, refit: bool) -> list[Row]:
        """Texts of the days to (re)decide: all in range on refit, else days holding undecided texts."""
        rows = []
        for *fields, injection, allowed in self.store.candidates(stock, start, end, refit):
            row = Row(*fields)
            row.injection = None if allowed else (injection or injection_of(row.title, row.body, semantic=False))
            rows.append(row)
        return rows

    # -- steps

    def _flag_keywords(self, rows: list[Row]) -> None:
        for r in rows:
            for rule in self.rules:
                word = rule.match(r.source, r.doc)
                if word:
                    r.flag = f"keyword:{rule.category}:{word}"
                    break

    @staticmethod
    def _exact(rows: list[Row]) -> list[Row]:
        """Mark later copies of a day's title; return the first occurrences (in time order)."""
        first: dict[tuple[str, str], Row] = {}
        keep = []
        for r in rows:
            key = (r.date, normalise_title(r.title))
            if not key[1]:
                key = (r.date, f"#{r.id}")  # a title of only punctuation is nobody's duplicate
            if key in first:
                r.dup_of, r.dup_kind = first[key].id, "exact"
            else:
                first[key] = r
                keep.append(r)
        return keep

    def _embed(self, rows: list[Row]) -> np.ndarray:
        """Unit vectors of each row's document; identical documents are embedded once."""
        cut = self.config.body_chars
        docs = [r.title if not r.body else f"{r.title} {r.body[:cut]}" for r in rows]
        unique = list(dict.fromkeys(docs))
        out = np.zeros((len(unique), 0), dtype=np.float32)
        parts, batch = [], 256
        t = time.perf_counter()
        for i in range(0, len(unique), batch):
            parts.append(self.embedder.encode(unique[i:i + batch]))
            self.progress("embedding", min(i + batch, len(unique)), len(unique))
        _TIMINGS["embedding"] += time.perf_counter() - t
        if parts:
            out = np.vstack(parts)
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        index = {d: i for i, d in enumerate(unique)}
        return out[[index[d] for d in docs]] if docs else out

    def _near(self, rows: list[Row], emb: np.ndarray) -> np.ndarray:
        """Within each day, a text as similar as the threshold to an earlier kept one joins it."""
        keep = np.ones(len(rows), dtype=bool)
        by_day: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            by_day[r.date].append(i)
        for idx in by_day.values():
            sims = emb[idx] @ emb[idx].T
            kept: list[int] = []
            for a in range(len(idx)):
                if kept:
                    best = kept[int(np.argmax(sims[a, kept]))]
                    if sims[a, best] >= self.config.near_threshold:
                        rows[idx[a]].dup_of, rows[idx[a]].dup_kind = rows[idx[best]].id, "near"
                        keep[idx[a]] = False
                        continue
                kept.append(a)
        return keep

    def _new_topic_model(self, n_docs: int) -> Any:
        from bertopic import BERTopic
        from sklearn.base import clone
        from sklearn.feature_extraction.text import CountVectorizer

        c = self.config
        if self.umap_model is None or self.hdbscan_model is None:
            umap_cls, hdbscan_cls = _timed_classes()
        if self.umap_model is None:
            keep_compiled(self.cache_dir / "numba")
        reducer = clone(self.umap_model) if self.umap_model is not None else umap_cls(
            n_neighbors=min(c.n_neighbors, n_docs - 1), n_components=c.n_components, min_dist=0.0,
            metric="cosine", random_state=c.seed, n_jobs=1)
        return BERTopic(
            umap_model=reducer,
            hdbscan_model=clone(self.hdbscan_model) if self.hdbscan_model is not None else hdbscan_cls(
                min_cluster_size=c.min_topic_size, metric="euclidean", cluster_selection_method="eom",
                prediction_data=True),
            vectorizer_model=clone(self.vectorizer_model) if self.vectorizer_model is not None else CountVectorizer(
                tokenizer=KoreanNouns(self.threads), token_pattern=None, lowercase=False),
            language="multilingual",  # "english" would strip every Hangul character before c-TF-IDF
            min_topic_size=c.min_topic_size, calculate_probabilities=False, verbose=False,
        )

    def _topic_flags(self, model: Any, rows: list[Row], topics: list[int]) -> dict[int, str]:
        """A cluster is off-topic when enough members hit one category, or its top words do."""
        members: dict[int, list[Row]] = defaultdict(list)
        for r, t in zip(rows, topics):
            members[t].append(r)
        flags = {}
        spread = {rule.category for rule in self.rules if rule.topics}  # categories that may flag a whole cluster
        for t, rs in members.items():
            if t == -1:
                continue
            hits = Counter(c for c in (r.flag.split(":")[1] for r in rs if r.flag) if c in spread)
            category, n = hits.most_common(1)[0] if hits else (None, 0)
            if category and n >= 2 and n / len(rs) >= self.topic_share:
                flags[t] = category
                continue
            words = {w for w, _ in (model.get_topic(t) or [])}
            for rule in self.rules:
                if not rule.topics or (rule.sources and not any(r.source in rule.sources for r in rs)):
                    continue
                if sum(any(k in w for w in words) for k in rule.keywords) >= 2:
                    flags[t] = rule.category
                    break
        return flags

    def _representatives(self, rows: list[Row], emb: np.ndarray, candidates: np.ndarray, copies: Counter) -> None:
        """Per day: the most-covered stories first, one per topic, then round-robin.

        `copies[id]` counts the day's exact and near copies a story stands for (`rows` are the
        surviving stories, so the counts come from the caller). Topics rank by the coverage of
        all their stories; within a topic the story with the most copies, then the one nearest
        the centroid, goes first. Import order only breaks exact ties.
        """
        by_day: dict[str, list[int]] = defaultdict(list)
        for i in np.flatnonzero(candidates):
            by_day[rows[i].date].append(int(i))
        for idx in by_day.values():
            groups: dict[Any, list[int]] = defaultdict(list)
            for i in idx:
                groups[rows[i].topic if rows[i].topic != -1 else f"o{i}"].append(i)
            ranked = []
            for members in groups.values():
                centroid = emb[members].mean(axis=0)
                order = sorted(members, key=lambda i: (-copies[rows[i].id], -float(emb[i] @ centroid), rows[i].id))
                weight = sum(1 + copies[rows[i].id] for i in members)
                ranked.append((-weight, rows[order[0]].id, order))
            ranked.sort()
            picked, depth = [], 0
            while len(picked) < self.config.top_k and any(depth < len(o) for _, _, o in ranked):
                picked += [o[depth] for _, _, o in ranked if depth < len(o)]
                depth += 1
            for i in picked[: self.config.top_k]:
                rows[i].is_representative = 1

    # -- the run

    def run(self, stock: str, start: str | None = None, end: str | None = None, refit: bool = False) -> DedupReport:
        t0 = time.perf_counter()
        _TIMINGS.clear()
        # topics from another embedding space can't take these vectors: only same-embedder models count
        models = self.store.models(stock, self.embedder_name())
        refit = refit or not models
        rows = self._rows(stock, start, end, refit)
        report = DedupReport(stock, start, end, input=len(rows), refit=refit and bool(rows))
        injected = [r for r in rows if r.injection]  # they join no story, so their copies weigh nothing
        rows = [r for r in rows if not r.injection]
        report.injections = len(injected)
        if injected:
            self.store.mark_injections([(r.injection, r.id) for r in injected])
        if not rows:
            report.topic_table = self.store.topic_table(stock, models[0][0] if models else None)
            return report
        model_run = None if refit else self._choose_model(models, rows[0].date, rows[-1].date)
        self.progress("keywords", 0, len(rows))
        self._flag_keywords(rows)
        self.progress("keywords", len(rows), len(rows))
        uniques = self._exact(rows)
        emb = self._embed(uniques)
        keep = self._near(uniques, emb)
        stories = [r for r, k in zip(uniques, keep) if k]
        story_emb = emb[keep]
        topic_words = {}
        self.progress("topics", 0, 1)
        model, topic_flags = self._topics(stock, stories, story_emb, refit, model_run)
        by_id = {r.id: r for r in rows}
        for r in rows:  # an exact copy of a text that was then merged as a paraphrase points to the survivor
            while r.dup_of is not None and by_id[r.dup_of].dup_of is not None:
                r.dup_of = by_id[r.dup_of].dup_of
        candidates = np.array([r.flag is None for r in stories])
        copies = Counter(r.dup_of for r in rows if r.dup_of is not None)
        self._representatives(stories, story_emb, candidates, copies)
        if model is not None and refit:
            topic_words = self._describe(model, stories, story_emb, topic_flags)
        self.progress("topics", 1, 1)
        self._count(report, rows, stories, copies)
        report.seconds = round(time.perf_counter() - t0, 3)
        timings = {k: round(_TIMINGS.get(k, 0.0), 3) for k in ("embedding", "reducer", "hdbscan")}
        timings["rest"] = round(report.seconds - sum(timings.values()), 3)
        report.timings = timings
        report.run, model_run = self._store(stock, report, rows, model if refit else None, topic_words, refit, model_run)
        report.topic_table = self.store.topic_table(stock, model_run)
        report.topics = len(report.topic_table)
        return report

    def _topics(self, stock: str, stories: list[Row], emb: np.ndarray, refit: bool,
                model_run: int | None) -> tuple[Any, dict[int, str]]:
        """Each story's topic (and a topic's off-topic flag on its members): a new model on refit, else
        the stored one of `model_run`, transformed. (model or None, off-topic flag per topic)"""
        model, topic_flags = None, {}
        if refit:
            if len(stories) >= max(3 * self.config.min_topic_size, self.config.n_components + 2):
                with only_what_runs():
                    model = self._new_topic_model(len(stories))
                    topics, _ = model.fit_transform([r.doc for r in stories], embeddings=emb)
                topic_flags = self._topic_flags(model, stories, list(topics))
            else:
                topics = [-1] * len(stories)  # too few texts to cluster: every story stands alone
        else:
            model = load_topic_model(*self.store.model(model_run))
            with only_what_runs():
                topics, _ = model.transform([r.doc for r in stories], embeddings=emb)
            topic_flags = self.store.topic_flags(stock, model_run)
        for r, t in zip(stories, topics):
            r.topic = int(t)
            if r.topic in topic_flags and not r.flag:
                r.flag = f"topic:{topic_flags[r.topic]}"
        return model, topic_flags

    @staticmethod
    def _count(report: DedupReport, rows: list[Row], stories: list[Row], copies: Counter) -> None:
        """The report's counts and its kept stories, most copied first within a day."""
        report.exact_duplicates = sum(r.dup_kind == "exact" for r in rows)
        report.near_duplicates = sum(r.dup_kind == "near" for r in rows)
        report.off_topic = sum(r.flag is not None and r.dup_of is None for r in rows)
        report.kept = sum(r.is_representative for r in rows)
        report.kept_stories = [
            {"date": r.date, "id": r.id, "copies": 1 + copies[r.id], "topic": r.topic, "title": r.title}
            for r in sorted(stories, key=lambda r: (r.date, -copies[r.id], r.id)) if r.is_representative
        ]
        report.days = len({r.date for r in rows})

    @staticmethod
    def _choose_model(models: list[tuple], first: str, last: str) -> int:
        """The newest model fitted on a range covering these days, else the newest one."""
        covering = [run for run, lo, hi in models if lo and hi and lo <= first and last <= hi]
        return covering[0] if covering else models[0][0]

    def embedder_name(self) -> str:
        return getattr(self._embedder, "name", None) or embedder_id(self.config.embedder)

    def _describe(self, model: Any, rows: list[Row], emb: np.ndarray, flags: dict[int, str]) -> dict[int, dict]:
        """Top words, size and the most central example of each topic."""
        out = {}
        members: dict[int, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            members[r.topic].append(i)
        for t, idx in members.items():
            if t == -1:
                continue
            centroid = emb[idx].mean(axis=0)
            example = rows[max(idx, key=lambda i: (float(emb[i] @ centroid), -rows[i].id))].title
            words = " ".join(w for w, _ in (model.get_topic(t) or [])[:8])
            out[t] = {"size": len(idx), "words": words, "example": example, "flag": flags.get(t)}
        return out

    def _store(self, stock: str, report: DedupReport, rows: list[Row], model: Any, topic_words: dict[int, dict],
               refit: bool, model_run: int | None) -> tuple[int, int | None]:
        """Write the run, the decisions and (on refit) the model of this range; (run, model run)."""
        c = self.config
        parts = {k: type(v).__name__ for k, v in (("umap_model", self.umap_model), ("hdbscan_model", self.hdbscan_model),
                                                   ("vectorizer_model", self.vectorizer_model)) if v is not None}
        params = json.dumps({**c.model_dump(), **({"parts": parts} if parts else {})}, ensure_ascii=False, sort_keys=True)
        blob = save_topic_model(model, self.embedder_name()) if model is not None else None
        record = DedupRun(stock, report.start, report.end, refit, self.embedder_name(), params, report.input,
                          report.exact_duplicates, report.near_duplicates, report.off_topic, report.kept,
                          len(topic_words), report.seconds, report.timings)
        marks = [(r.dup_of, r.dup_kind, r.topic if r.dup_of is None else None, r.flag, r.is_representative, r.id)
                 for r in rows]
        topics = [(t, d["size"], d["words"], d["example"], d["flag"]) for t, d in sorted(topic_words.items())]
        stored = (rows[0].date, rows[-1].date, "bertopic-safetensors-zip", blob) if blob is not None else None
        return self.store.save(record, marks, topics, stored, model_run)
