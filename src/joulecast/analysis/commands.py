"""``joulecast report`` and ``joulecast analyze``."""

from __future__ import annotations

import argparse
from pathlib import Path

from joulecast.outputs import check_output, print_json
from joulecast.verbs import Verbs, add_carbon_options, carbon_of, console, shown, store_of


def _group_by(values: list[str]) -> list[str]:
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or ["architecture", "environment"]


def cmd_report(args: argparse.Namespace) -> int:
    """Write the study report (HTML, or Markdown) and optionally its tables as CSV."""
    import tempfile

    from joulecast.analysis.report import build, write_html, write_md, write_tables

    output = Path(args.output)
    check_output(output)
    intensity = carbon_of(args)
    with tempfile.TemporaryDirectory(prefix="joulecast-report-") as figures:
        report = build(
            store_of(args, read_only=True),
            study=args.study,
            group_by=_group_by(args.group_by),
            figures_dir=Path(figures),
            intensity=intensity,
            pue=args.pue,
        )
        if args.format == "md":
            write_md(report, output)
        else:
            write_html(report, output)
        written = write_tables(report, args.tables) if args.tables else []
    out = console()
    out.print(shown(f"report: {output} ({len(report.sections)} sections)"))
    if written:
        out.print(shown(f"tables: {len(written)} CSV files in {args.tables}"))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Print the key tables of the analysis in the terminal."""
    from joulecast.analysis.report import key_results

    data = key_results(
        store_of(args, read_only=True), study=args.study, group_by=_group_by(args.group_by)
    )
    if args.json:
        print_json(data)
        return 0
    out = console()
    if not data["runs"]:
        out.print("no runs to analyse")
        return 0
    out.print(shown(data["cleaning"]))
    for c in data["comparisons"]:
        out.print(shown(f"- {c['summary']}"))
    for t in data["tradeoffs"][:10]:
        out.print(shown(f"- {t['text']}"))
    return 0


def register(verbs: Verbs) -> None:
    """Add ``report`` and ``analyze``."""
    p = verbs.add(
        "report",
        cmd_report,
        "write a self-contained HTML (or Markdown) report of the store's runs",
        json=False,
    )
    p.add_argument("-o", "--output", required=True, help="report file (report.html)")
    p.add_argument("--study", help="only the runs of this study")
    p.add_argument(
        "--group-by",
        action="append",
        default=[],
        help="factors to compare (architecture,environment)",
    )
    p.add_argument("--format", choices=["html", "md"], default="html")
    p.add_argument("--tables", metavar="DIR", help="also write every table as CSV in DIR")
    add_carbon_options(p)
    p = verbs.add(
        "analyze",
        cmd_analyze,
        "print the key results of the analysis",
    )
    p.add_argument("--study", help="only the runs of this study")
    p.add_argument("--group-by", action="append", default=[])
