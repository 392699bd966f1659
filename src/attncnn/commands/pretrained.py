"""`attncnn pretrained`: list the weights shipped with attncnn; refresh them from results.

    attncnn pretrained                                    # what `pretrained=TAG` can load
    attncnn pretrained --ship digits results/digits_ablation --readme README.md

--ship TAG copies, for every model among the results files, its best published run
(top-1) into the package (src/attncnn/pretrained/) under TAG and rewrites the index.
"""
from __future__ import annotations

import argparse
import json

HELP = "list the weights shipped with attncnn (create_model(..., pretrained=TAG)); --ship refreshes them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="*", metavar="RESULTS",
                   help="with --ship: results JSON files, folders of them or globs")
    p.add_argument("--ship", metavar="TAG",
                   help="replace the shipped weights of TAG by the best published run of each "
                        "model in RESULTS")
    p.add_argument("--dest", metavar="DIR", default=None,
                   help="with --ship: the folder to write (default: the package's own)")
    p.add_argument("--readme", metavar="FILE",
                   help="rewrite the table between FILE's <!-- pretrained:begin/end --> markers")
    p.add_argument("--json", action="store_true", help="print the index entries as JSON")


def run(args: argparse.Namespace) -> int:
    from attncnn.errors import AttncnnError
    from attncnn.pretrained.shipped import list_pretrained, read_index, render_table, ship, write_readme

    if args.results and not args.ship:
        raise AttncnnError("results files are read only with --ship TAG")
    if args.ship:
        if not args.results:
            raise AttncnnError("--ship TAG needs results files, folders or globs")
        for e in ship(args.results, args.ship, dest=args.dest):
            print(f"{e['model']}:{e['tag']}  top-1 {e['top1']:.2f} (best of {e['candidates']}, "
                  f"{e['results']})  -> {e['file']} ({e['bytes'] / 1e3:.0f} kB)")
    entries = read_index(args.dest)["weights"] if args.dest else list_pretrained()
    if args.readme:
        write_readme(args.readme, entries)
        print(f"{args.readme}: pretrained table updated ({len(entries)} entries)")
    elif args.json:
        print(json.dumps(entries, indent=2))
    elif not args.ship:
        print(render_table(entries), end="")
    return 0
