"""HTML reports people look at: `sep experiment report ID --out FILE` and `sep eval --html FILE`.

One page per result, self-contained: the plots are matplotlib SVG written inline (no JavaScript,
no CDN, works offline), the tables are plain HTML, and a JSON twin beside it holds the numbers.
Plots: a forest plot of accuracy and MCC with their 95% intervals for every arm and baseline;
equity curves net of costs against buy-and-hold, with the drawdown; a reliability diagram; the
coverage-accuracy curve of abstaining below a confidence.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape

from sep.evaluate import equity_curves

TEMPLATE_DIR = Path(__file__).with_name("templates")

MEMORY_NOTE = ("The data here is older than the packaged models' training data: a model may remember what "
               "happened, so no figure on days before its knowledge cutoff is evidence of skill.")


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: drop the XML prolog and doctype


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                                "axes.spines.right": False})
    import matplotlib.pyplot as plt

    return plt


def _legend_or_empty(ax) -> None:
    """A legend, or a plain statement that there is nothing to draw (an arm that never answered)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no answered days", ha="center", va="center", color="#b00020", transform=ax.transAxes)


def forest(rows: dict[str, dict]) -> str:
    """Accuracy and MCC with 95% intervals, one line per arm or baseline; a silent arm is marked."""
    plt = _plt()
    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.42 * len(names) + 1.2), sharey=True)
    for ax, key, ci, ref, title in ((axes[0], "accuracy", "accuracy_ci95", 0.5, "accuracy (unanswered = wrong)"),
                                    (axes[1], "mcc", "mcc_ci95", 0.0, "MCC over answered days")):
        for y, name in enumerate(names):
            s = rows[name]
            value, interval = s.get(key), s.get(ci)
            colour = "#888888" if name.startswith("baseline") else "#1f5fa8"
            if value is None:
                ax.text(ref, y, "no answers", va="center", ha="center", color="#b00020", fontsize=8)
                continue
            if interval:
                ax.plot(interval, [y, y], color=colour, lw=2)
            ax.plot([value], [y], "o", color=colour)
        ax.axvline(ref, color="#444444", ls="--", lw=0.8)
        ax.set_title(title)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
    axes[0].set_xlim(0, 1)
    axes[1].set_xlim(-1, 1)
    return _svg(fig)


def equity(curves: dict[str, dict]) -> str:
    """Cumulative return net of costs per arm against buy-and-hold, and each arm's drawdown."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    hold = None
    for name, c in curves.items():
        x = list(range(len(c["days"])))
        top.plot(x, [v * 100 for v in c["net"]], label=f"{name} (net)")
        bottom.plot(x, [v * 100 for v in c["drawdown"]], label=name)
        hold = hold or c
    if hold:
        top.plot(range(len(hold["days"])), [v * 100 for v in hold["buy_and_hold"]], color="black", ls="--",
                 label="buy and hold")
        ticks = list(range(0, len(hold["days"]), max(1, len(hold["days"]) // 6)))
        bottom.set_xticks(ticks, [hold["days"][i] for i in ticks], rotation=20)
    top.axhline(0, color="#444444", lw=0.6)
    top.set_ylabel("cumulative return, %")
    bottom.set_ylabel("drawdown, %")
    top.legend(fontsize=8, loc="best")
    top.set_title("equity net of costs (long on up, short on down)")
    return _svg(fig)


def running(days: list[str], values: list[float], label: str) -> str:
    """One series over the days (the audit's running accuracy), against a coin's 0.5."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.plot(range(len(values)), values, label=label)
    ax.axhline(0.5, color="#444444", ls="--", lw=0.8)
    ax.set_ylim(0, 1)
    ticks = list(range(0, len(days), max(1, len(days) // 5)))
    ax.set_xticks(ticks, [days[i] for i in ticks], rotation=20)
    ax.legend(fontsize=8)
    return _svg(fig)


def reliability(tables: dict[str, list[dict]]) -> str:
    """Mean forecast P(up) against how often the close went up, per bin; the diagonal is calibrated."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="#444444", ls="--", lw=0.8)
    for name, bins in tables.items():
        used = [b for b in bins if b["n"]]
        if used:
            ax.plot([b["mean_p_up"] for b in used], [b["freq_up"] for b in used], "o-", label=name, markersize=4)
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("forecast P(up)"), ax.set_ylabel("share of days up")
    ax.set_title("reliability")
    _legend_or_empty(ax)
    return _svg(fig)


def coverage_accuracy(curves: dict[str, list[dict]]) -> str:
    """Abstain below a confidence: the share of days still answered against their accuracy."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, points in curves.items():
        used = [p for p in points if p["n"]]
        if used:
            ax.plot([p["coverage"] for p in used], [p["accuracy"] for p in used], "o-", label=name, markersize=3)
    ax.axhline(0.5, color="#444444", ls="--", lw=0.8)
    ax.set_xlim(0, 1.02), ax.set_ylim(0, 1)
    ax.set_xlabel("coverage (share of days answered)"), ax.set_ylabel("accuracy of the answered days")
    ax.set_title("coverage-accuracy")
    _legend_or_empty(ax)
    return _svg(fig)


def environment() -> Environment:
    """The templates of every HTML report (this module's and the audit's), autoescaped, with the number
    filters: `num`, `pct` (a return in percent) and `ci` show a missing figure (a baseline's Brier) as –."""
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html", "j2"]))

    def num(x, fmt: str = "%.3f") -> str:  # a figure a row lacks (a baseline's Brier) shows as –
        return "–" if x is None or isinstance(x, Undefined) else fmt % x

    def pct(x) -> str:  # a daily return or reward, in percent with its sign
        return "–" if x is None or isinstance(x, Undefined) else f"{x:+.2%}"

    def ci(x, kind: str = "num") -> str:
        if not x or isinstance(x, Undefined):
            return "–"
        return f"{pct(x[0])} – {pct(x[1])}" if kind == "pct" else f"{x[0]:.3f}–{x[1]:.3f}"

    env.filters.update(num=num, ci=ci, pct=pct)
    return env


def experiment_page(result: dict) -> str:
    """The HTML of a stored experiment (what `sep experiment run` returned)."""
    scored = {name: s for name, s in result["arms"].items() if not s.get("skipped")}
    rows = {**scored, **{f"baseline: {n}": s for n, s in result["baselines"].items()}}
    plots = {"forest": forest(rows),
             "equity": equity({n: s["curves"] for n, s in scored.items() if s.get("curves")}),
             "reliability": reliability({**{n: s["reliability"] for n, s in scored.items() if s.get("reliability")},
                                         **{f"{n} (calibrated)": s["calibrated"]["reliability"] for n, s in scored.items()
                                            if (s.get("calibrated") or {}).get("reliability")
                                            and s["calibrated"].get("folds_fitted")}}),
             "coverage": coverage_accuracy({n: s["coverage_accuracy"] for n, s in scored.items()
                                            if s.get("coverage_accuracy")})}
    return environment().get_template("report.html.j2").render(
        kind="experiment", title=f"experiment {result['id']}: {result['name']}", r=result, rows=rows, plots=plots,
        memory_note=MEMORY_NOTE)


def eval_page(report: dict) -> str:
    """The HTML of `sep eval`'s report."""
    f = report["forecast"]
    head = f"{f['method']} · {f['model']}"
    rows = {head: report, **{n: s for n, s in report["forecasts"].items() if n != head},
            **{f"baseline: {n}": s for n, s in report["baselines"].items()}}
    plots = {"forest": forest(rows), "equity": equity({head: equity_curves(report["backtest"])}),
             "reliability": reliability({head: report["reliability"]}),
             "coverage": coverage_accuracy({head: report["coverage_accuracy"]})}
    return environment().get_template("report.html.j2").render(
        kind="eval", title=f"{', '.join(report['stocks'])} {report['start']}..{report['end']}: {head}", r=report,
        rows=rows, plots=plots, memory_note=MEMORY_NOTE)


def write(out: Path, page: str, data: dict) -> tuple[Path, Path]:
    """The page and its JSON twin (same name, .json), folders made as needed, each written
    atomically (a reader never sees half a report)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    twin = out.with_suffix(".json")
    for path, text in ((out, page), (twin, json.dumps(data, ensure_ascii=False, indent=2))):
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return out, twin
