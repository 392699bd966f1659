"""`attncnn report`: results files -> the paper's tables, measured beside claimed."""
from __future__ import annotations

import argparse

HELP = "build the paper's tables (Markdown, CSV, accuracy plots) from results files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", nargs="+", default=None, metavar="PATH",
                   help="results JSON files or folders searched recursively for *.json "
                        "(default: results/)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write report.md, report.csv and <table>_curves.png here")
    p.add_argument("--readme", default=None, metavar="README.md",
                   help="replace the text between <!-- results:begin --> and "
                        "<!-- results:end --> in this file with the tables")
    p.add_argument("--claims", default=None, metavar="YAML",
                   help="table layout and paper claims (default: the packaged paper_claims.yaml)")
    p.add_argument("--no-plot", action="store_true", help="skip the accuracy-per-epoch plots")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attncnn.analysis.report import generate

    results = args.results
    if results is None:  # the default folder may not exist yet: then every cell says "no run"
        results = ["results"] if Path("results").is_dir() else []
    markdown = generate(results, out_dir=args.out, readme=args.readme,
                        plot=not args.no_plot, claims=args.claims)
    print(markdown, end="")
    return 0
