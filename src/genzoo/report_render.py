"""genzoo-report's report as Markdown and as a self-contained HTML page (the PNGs are linked beside it)."""

from __future__ import annotations

import html

NO_ROWS = "No run folder could be read wholly: each is listed under 'Left out' with the reason."


def number(value: float) -> str:
    """Enough digits to compare runs: 3 decimals below 10 (bits/dim, accuracies), fewer for larger numbers."""
    a = abs(value)
    return f"{value:.3f}" if a < 10 else f"{value:.2f}" if a < 1000 else f"{value:.0f}"


def mean_pm_std(summary: dict | None) -> str:
    if summary is None:
        return "—"
    if summary["std"] is None:
        return number(summary["mean"])
    return f"{number(summary['mean'])} ± {number(summary['std'])}"


def seeds_cell(seeds: list) -> str:
    return f"{len(seeds)} ({', '.join(str(s) for s in seeds)})"


def protocol_cells(protocol: dict | None) -> list[str]:
    if not protocol:
        return ["not recorded (a run from before genzoo wrote protocols)", "", "", "", "", ""]
    accuracy = protocol.get("classifier_acc")
    return [str(protocol.get(k, "")) for k in ("extractor", "weights", "samples", "reference", "reference_size")] + [
        "" if accuracy is None else f"{accuracy:.3f}"]


def tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table, shared by the Markdown and the HTML."""
    keys = report["group_keys"]
    header = [*keys, "seeds", *report["columns"]]
    rows = [[*(row["group"].get(k, "—") for k in keys), seeds_cell(row["seeds"]),
             *(mean_pm_std(row["metrics"][c]) for c in report["columns"])] for row in report["rows"]]
    out = [("Final metrics (mean ± sample standard deviation over seeds)", header, rows)]
    if report.get("protocols"):
        out.append(("Fidelity protocols (a column holds numbers of one protocol only)",
                    ["tag", "extractor", "weights", "generated", "reference", "reference size", "classifier acc"],
                    [[p["tag"], *protocol_cells(p["protocol"])] for p in report["protocols"]]))
    if report["published"]:
        out.append(("Published (or earlier reached) numbers beside ours",
                    ["group", "metric", "ours", "our protocol", "theirs", "their protocol", "kind", "units", "data",
                     "source"],
                    [[p["group"], p["metric"], mean_pm_std(p["ours"]), p.get("our_protocol", ""),
                      number(float(p["value"])), p.get("their_protocol", ""), p["kind"], p.get("units", ""),
                      p.get("data", ""), p.get("source", "")] for p in report["published"]]))
    if report["failed"]:
        out.append(("Failed jobs", ["job", "overrides", "error"],
                    [[f"#{j.get('num', '?')}", " ".join(map(str, j.get("overrides") or [])), j.get("error") or ""]
                     for j in report["failed"]]))
    if report.get("unreadable"):
        out.append(("Left out: folders that cannot be read wholly (never averaged in)", ["folder", "reason"],
                    [[u["run"], u["reason"]] for u in report["unreadable"]]))
    if report.get("unfinished"):
        out.append(("Left out: runs without final metrics (failed, killed or still running)",
                    ["run", "epochs logged"], [[u["run"], u["epochs"]] for u in report["unfinished"]]))
    return out


def render_markdown(report: dict) -> str:
    lines = [f"# genzoo report: {report['root']}", ""]
    if report["group_keys"]:
        lines += [f"Grouped by {', '.join(f'`{k}`' for k in report['group_keys'])}; seeds averaged over.", ""]
    if not report["rows"]:
        lines += [NO_ROWS, ""]
    for title, header, rows in tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    for plot in report["plots"]:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines)


def render_html(report: dict) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>genzoo report: {e(report['root'])}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
             "img{max-width:100%;display:block;margin-bottom:2em}</style></head><body>",
             f"<h1>genzoo report: {e(report['root'])}</h1>"]
    if report["group_keys"]:
        parts.append(f"<p>Grouped by {e(', '.join(report['group_keys']))}; seeds averaged over.</p>")
    if not report["rows"]:
        parts.append(f"<p>{e(NO_ROWS)}</p>")
    for title, header, rows in tables(report):
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts += [f"<img src='{e(plot)}' alt='{e(plot)}'>" for plot in report["plots"]]
    parts.append("</body></html>\n")
    return "\n".join(parts)
