"""Dedup's reducer: UMAP and HDBSCAN as sep runs them, and the imports and compilation they cost.

A dedup's fixed cost (issue 36) was imports and numba compilation, not work: BERTopic's unused
backends are hidden while it runs, umap gets pynndescent only when it searches with it, UMAP's
numba functions are compiled once per machine, and its neighbours are exact at every size sep uses.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

_TIMINGS: dict[str, float] = defaultdict(float)  # filled by the timed models below, read per run


# stories whose UMAP gets exact cosine neighbours from one matrix product; below, UMAP's own small-data
# path (unchanged results on small sets); above, its approximate search (pynndescent)
EXACT_NEIGHBOURS = (1_000, 40_000)


def exact_neighbours(emb: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each unit vector's k nearest by cosine (itself first), as UMAP's `precomputed_knn` takes them."""
    idx = np.empty((len(emb), k), dtype=np.int32)
    dist = np.empty((len(emb), k), dtype=np.float32)
    for s in range(0, len(emb), chunk):
        sims = emb[s:s + chunk] @ emb.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, part, 1)
        order = np.argsort(-top, axis=1, kind="stable")
        idx[s:s + chunk] = np.take_along_axis(part, order, 1)
        dist[s:s + chunk] = np.maximum(0.0, 1.0 - np.take_along_axis(top, order, 1))
    return idx, dist


class _NotInstalled(importlib.abc.MetaPathFinder):
    """Answers `import name` as if the package were not installed."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:  # None: ask the next finder
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (sep dedup never runs it)", name=name)


# BERTopic imports these at import and save time for backends sep never runs (its embeddings come from
# the packaged encoder): 10 s of a dedup. BERTopic itself falls back when they are missing.
UNUSED_BY_BERTOPIC = ("sentence_transformers", "transformers", "torch", "openai", "langchain_core", "langchain")
# BERTopic imports its plotting module (plotly, ~3 s) unless `find_spec("plotly")` says it is missing;
# a None entry in sys.modules is how find_spec is told (a finder that raises would raise through it).
UNSEEN_BY_BERTOPIC = ("plotly",)


def _real(module: str) -> ModuleType:
    """A pynndescent module itself: sep's stand-ins (below) leave `sys.modules` first."""
    for name in [n for n, m in sys.modules.items() if n.startswith("pynndescent") and getattr(m, "sep_stand_in", False)]:
        del sys.modules[name]
    return importlib.import_module(module)


class _LaterTable(dict):
    """One of pynndescent's distance tables, read from pynndescent only when UMAP first needs it.

    UMAP asks whether pynndescent knows its metric on every fit, even when it never searches (as with
    precomputed neighbours); for the metrics sep's dedup uses the answer is known without the import."""

    KNOWN = frozenset({"cosine", "euclidean"})  # in both of pynndescent's tables

    def __init__(self, module: str, name: str) -> None:
        super().__init__()
        self.where = (module, name)

    def __contains__(self, key: object) -> bool:
        return key in self.KNOWN or key in getattr(_real(self.where[0]), self.where[1])

    def __getitem__(self, key: Any) -> Any:
        return getattr(_real(self.where[0]), self.where[1])[key]


class _LaterClass(type):
    def __instancecheck__(cls, obj: Any) -> bool:  # only an imported pynndescent made an NNDescent
        module = sys.modules.get("pynndescent")
        return module is not None and not getattr(module, "sep_stand_in", False) and isinstance(obj, module.NNDescent)


class _LaterNNDescent(metaclass=_LaterClass):
    """pynndescent's NNDescent, imported (and compiled) only when a UMAP really searches with it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _real("pynndescent").NNDescent(*args, **kwargs)


def _later_pynndescent() -> dict[str, Any]:
    """Stand-ins for the three pynndescent modules umap imports at its top, while umap is imported.

    Importing pynndescent compiles numba for 16 s on a machine's first run and loads for 1.7 s after
    (issue 36), and sep's UMAP never searches with it (exact neighbours, or UMAP's small-data path);
    umap only keeps the names, and they import the real package on first use."""
    top, distances, sparse = (ModuleType(n) for n in ("pynndescent", "pynndescent.distances", "pynndescent.sparse"))
    top.sep_stand_in = distances.sep_stand_in = sparse.sep_stand_in = True
    top.NNDescent = _LaterNNDescent
    distances.named_distances = _LaterTable("pynndescent.distances", "named_distances")
    sparse.sparse_named_distances = _LaterTable("pynndescent.sparse", "sparse_named_distances")
    return {m.__name__: m for m in (top, distances, sparse)}


@contextmanager
def only_what_runs() -> Iterator[None]:
    """While BERTopic is imported, fitted, saved or loaded, its unused backends look uninstalled,
    and umap is imported without pynndescent (`_later_pynndescent`).

    Only packages not yet imported are hidden, and only for the duration: a process that already uses
    torch (or a sentence-transformers `--embedder`) keeps it."""
    hidden = {n for n in UNUSED_BY_BERTOPIC if n not in sys.modules}
    unseen = dict.fromkeys(n for n in UNSEEN_BY_BERTOPIC if n not in sys.modules)
    if "umap" not in sys.modules and "pynndescent" not in sys.modules:
        unseen.update(_later_pynndescent())
    finder = _NotInstalled(hidden)
    sys.meta_path.insert(0, finder)
    sys.modules.update(unseen)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name, stand_in in unseen.items():
            if sys.modules.get(name, 0) is stand_in:
                del sys.modules[name]


def keep_compiled(directory: Path) -> None:
    """UMAP's numba functions compiled once per machine, not in every process (10-13 s of a dedup).

    umap-learn compiles without numba's `cache=True`; this turns the on-disk cache on for each of its
    functions, in `directory` (sep's cache). A user's NUMBA_CACHE_DIR wins. Once per process."""
    if globals().get("_KEPT_COMPILED"):
        return
    import numba
    import umap  # noqa: F401  (loads every umap module below)

    import sep.dedup.kernels  # noqa: F401
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    before = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = before or str(directory)  # read when each function's cache is made, just below
    try:
        for name, module in list(sys.modules.items()):
            if module is not None and (name in ("umap", "sep.dedup.kernels") or name.startswith("umap.")):
                for f in vars(module).values():
                    if isinstance(f, CPUDispatcher) and isinstance(f._cache, NullCache):
                        f.enable_caching()
    finally:
        numba.config.CACHE_DIR = before
    globals()["_KEPT_COMPILED"] = True


@contextmanager
def compiled_small_data() -> Iterator[None]:
    """While a UMAP fits, its small-data cosine distances come from one compiled loop (`kernels`),
    the same matrix as scikit-learn's per-pair calls, 1 s sooner; any other metric or input goes on
    to scikit-learn."""
    import umap.umap_ as umap_
    from umap.distances import cosine

    from sep.dedup.kernels import cosine_matrix

    sklearn_pairwise = umap_.pairwise_distances

    def pairwise_distances(X: Any, Y: Any = None, metric: Any = "euclidean", **kwds: Any) -> Any:
        if metric is cosine and Y is None and not kwds and isinstance(X, np.ndarray) and X.ndim == 2:
            return cosine_matrix(np.ascontiguousarray(X))
        return sklearn_pairwise(X, Y, metric=metric, **kwds)

    umap_.pairwise_distances = pairwise_distances
    try:
        yield
    finally:
        umap_.pairwise_distances = sklearn_pairwise


def _timed_classes() -> tuple[type, type]:
    """UMAP and HDBSCAN subclasses that add their fit/transform seconds to `_TIMINGS`.

    Built on first use (importing umap compiles numba for a while) and published as module
    attributes, so a pickled topic model finds them again in a new process. Between the bounds of
    `EXACT_NEIGHBOURS` stories the UMAP is given exact neighbours (one matrix product): its own
    neighbour search spent most of a dedup (numba recompiled in every process) and can't beat brute
    force at this size. A stored topic model keeps no UMAP (BERTopic's safetensors format), so no
    later transform needs UMAP's search index.
    """
    if "TimedUMAP" not in globals():
        from hdbscan import HDBSCAN
        from umap import UMAP

        def timed(name: str, method: Callable) -> Callable:
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return method(self, *args, **kwargs)
                finally:
                    _TIMINGS[name] += time.perf_counter() - t
            return wrapper

        def fit(self: Any, X: Any, *args: Any, **kwargs: Any) -> Any:
            if self.metric != "cosine" or self.precomputed_knn[0] is not None or len(X) > EXACT_NEIGHBOURS[1]:
                return UMAP.fit(self, X, *args, **kwargs)
            if len(X) >= EXACT_NEIGHBOURS[0]:
                self.precomputed_knn = (*exact_neighbours(np.asarray(X, dtype=np.float32), self.n_neighbors), None)
                return UMAP.fit(self, X, *args, **kwargs)
            with compiled_small_data():
                return UMAP.fit(self, X, *args, **kwargs)

        umap_cls = type("TimedUMAP", (UMAP,), {"fit": timed("reducer", fit), "transform": timed("reducer", UMAP.transform),
                                               "__module__": "sep.dedup"})  # whose __getattr__ builds them
        hdb_cls = type("TimedHDBSCAN", (HDBSCAN,), {"fit": timed("hdbscan", HDBSCAN.fit), "__module__": "sep.dedup"})
        globals().update(TimedUMAP=umap_cls, TimedHDBSCAN=hdb_cls)
    return globals()["TimedUMAP"], globals()["TimedHDBSCAN"]

