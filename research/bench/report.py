"""The benchmark's report as a markdown table and a Figure-3 style plot (plotly)."""

from __future__ import annotations

import logging
from pathlib import Path

from .measure import METHODS

logger = logging.getLogger(__name__)

LABELS = {"emma": "EMMA (recall + rerank)", "recall_only": "recall only", "all_pairs": "all-pairs cross-encoder"}
COLORS = {"emma": "#1f77b4", "recall_only": "#2ca02c", "all_pairs": "#d62728"}


def _fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def machine_line(report: dict) -> str:
    """The CPU, what torch uses of it (ISA, native bf16 and whether it beats fp32, int8 kernels) and any limits set on it."""
    m = report.get("machine", {})
    cpu = m.get("torch_cpu", {})
    yes = lambda v: "yes" if v else "no"  # noqa: E731
    line = (f"CPU {m.get('cpu', '?')} (flags: {' '.join(m.get('cpu_flags', [])) or '?'}); torch uses ISA {cpu.get('isa', '?')}, "
            f"native bf16 {yes(cpu.get('bf16'))}"
            + (f" (faster than fp32: {yes(cpu['bf16_faster'])})" if cpu.get("bf16") and "bf16_faster" in cpu else "")
            + f", int8 kernels {yes(cpu.get('int8'))} ({cpu.get('quantized_engine', '?')})")
    limits = m.get("isa_limits") or {}
    return line + (f"; limited by {' '.join(f'{k}={v}' for k, v in limits.items())}" if limits else "") + (f"; GPU {m['gpu']}" if "gpu" in m else "")


def format_table(report: dict) -> str:
    """A markdown table of the results plus the headline ratios (and, for several precisions, their ratios)."""
    asked = report.get("asked") or [report["precision"]]
    rounds = f", medians of {report['repeats']} interleaved rounds" if report.get("repeats", 1) > 1 else ""
    lines = [
        machine_line(report),
        f"device {report['device']}, {report['threads']} thread(s), precision {report['precision']} (asked: {','.join(asked)}), "
        f"k = {report['k']}{rounds}",
        "",
        "| n relations | method | precision | sentences/s | latency p50 ms | latency p95 ms | macro F1 | peak memory MB | index build s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        sps = _fmt(r["sentences_per_s"], ".1f" if r["sentences_per_s"] >= 1 else ".3f") + (" *" if r.get("estimated") else "")
        lines.append(
            f"| {r['n_relations']} | {r['method']} | {r.get('precision', report['precision'])} | {sps} | {_fmt(r['latency_p50_ms'], '.1f')} | "
            f"{_fmt(r['latency_p95_ms'], '.1f')} | {_fmt(r['f1'], '.2f')} | {_fmt(r['peak_memory_mb'], '.0f')} | "
            f"{_fmt(r['index_build_s'], '.2f')} |"
        )
    if any(r.get("estimated") for r in report["results"]):
        lines += ["", "\\* all-pairs estimated from a sample of the sentences (F1 not reported)."]
    if report["headline"]:
        lines += ["", "| n relations | precision | EMMA / all-pairs throughput | ideal n/(1+k) | fraction of ideal |", "|---:|---|---:|---:|---:|"]
        for h in report["headline"]:
            lines.append(f"| {h['n_relations']} | {h.get('precision', report['precision'])} | {h['speedup']:.1f}× | {h['ideal']:.1f}× | "
                         f"{h['fraction_of_ideal']:.2f} |")
    if report.get("comparison"):
        lines += ["", "Side by side, per round (median over rounds):", "",
                  "| n relations | method | precision | latency p50 / reference | throughput / reference | macro F1 − reference |",
                  "|---:|---|---|---:|---:|---:|"]
        for c in report["comparison"]:
            lines.append(f"| {c['n_relations']} | {c['method']} | {c['precision']} vs {c['reference']} | {_fmt(c['latency_p50_ratio'], '.2f')} | "
                         f"{c['throughput_ratio']:.2f} | {_fmt(c['f1_difference'], '+.2f')} |")
    return "\n".join(lines)


def figure(report: dict):
    """Figure-3 style: per-sentence runtime bars (log scale) and macro-F1 lines, against n relations."""
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    shown = report["results"][0].get("precision") if report["results"] else None  # several precisions: the first's rows
    report = {**report, "results": [r for r in report["results"] if r.get("precision") == shown],
              "headline": [h for h in report["headline"] if h.get("precision") == shown], "precision": shown or report["precision"]}
    sizes = sorted({r["n_relations"] for r in report["results"]})
    x = [str(n) for n in sizes]
    for method in METHODS:
        rows = {r["n_relations"]: r for r in report["results"] if r["method"] == method}
        if not rows:
            continue
        ms = [1e3 / rows[n]["sentences_per_s"] if n in rows else None for n in sizes]
        text = ["est." if n in rows and rows[n].get("estimated") else "" for n in sizes]
        fig.add_trace({"type": "bar", "x": x, "y": ms, "name": f"{LABELS[method]}: ms / sentence", "text": text,
                       "textposition": "outside", "marker_color": COLORS[method], "opacity": 0.75}, secondary_y=False)
        f1 = [rows[n]["f1"] if n in rows else None for n in sizes]
        if any(v is not None for v in f1):
            fig.add_trace({"type": "scatter", "mode": "lines+markers", "x": x, "y": f1, "name": f"{LABELS[method]}: macro F1",
                           "line": {"color": COLORS[method], "dash": "dot" if method == "all_pairs" else "solid"},
                           "connectgaps": False}, secondary_y=True)
    times = lambda v: f"{v:.1f}×" if v < 10 else f"{v:.0f}×"  # noqa: E731
    heads = ", ".join(f"n={h['n_relations']}: {times(h['speedup'])} (ideal {times(h['ideal'])})" for h in report["headline"])
    fig.update_layout(
        title={"text": f"EMMA vs all-pairs — {report['device']}, {report['threads']} thread(s), {report['precision']}, k={report['k']}"
               + (f"<br><sup>throughput ratio {heads}</sup>" if heads else ""), "font": {"size": 14}},
        barmode="group", xaxis_title="relations (n)", legend={"orientation": "h", "y": -0.2}, template="plotly_white",
        width=1000, height=560,
    )
    fig.update_yaxes(title_text="runtime per sentence, batched (ms, log)", type="log", secondary_y=False)
    fig.update_yaxes(title_text="macro F1 (%)", range=[0, 105], tickmode="linear", tick0=0, dtick=20, showgrid=False, secondary_y=True)
    return fig


def write_plot(report: dict, path: str | Path) -> Path:
    """Write the figure: PNG for a ``.png`` path (kaleido), else self-contained HTML.

    A PNG needs kaleido and a local Chrome/Chromium; when that fails the figure goes to the same
    name with ``.html`` and a warning says why. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("kaleido", "choreographer"):  # they log every browser step at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    fig = figure(report)
    if path.suffix.lower() == ".png":
        try:
            fig.write_image(str(path))
            return path
        except Exception as e:  # kaleido raises several types when no browser can render offline
            path = path.with_suffix(".html")
            logger.warning("PNG not written (%s: %s); writing %s instead", type(e).__name__, (str(e).splitlines() or [""])[0], path)
    fig.write_html(str(path), include_plotlyjs=True)
    return path
