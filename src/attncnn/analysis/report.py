"""Results files -> the paper's tables: measured accuracy beside the paper's claims.

`load_runs` reads results files (docs/results-format.md), `build_tables` places each run
by its tags {table, row, dataset} (or, untagged, by model and data) into the tables laid
out in `paper_claims.yaml`, and the renderers write Markdown, CSV and accuracy-per-epoch
plots. Within a cell, runs are pooled over seeds only when everything else that changes
the figure is equal (data, split, subset size, epochs, schedule, batch, lr, model and its
arguments): a `Setting`. Different settings stay apart, each with its own line and
footnote naming its data, split, epochs, device and files, so every figure is traceable.
The autocast precision is not part of a setting (a CPU without bf16 units trains in float32
what one with them trains under bf16 autocast): runs of one setting that differ in it are
pooled when they complete each other's seeds, and kept apart when a seed was run in both
(then they compare precisions); footnotes name each run's precision.
A table that names a `baseline` row also gets, per row, the seed-paired difference from
it with a 95% t-interval and a verdict, and the wall time per run against the baseline's.

The module is split: `report_runs` (results files -> runs), `report_stats` (paired
differences, t-intervals, wall time), `report_render` (Markdown, CSV, README, plots); the
names below are re-exported so `from attncnn.analysis.report import ...` keeps working.
"""
from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from attncnn.analysis.report_render import (  # noqa: F401  (re-exported)
    BEGIN,
    CSV_FIELDS,
    END,
    plot_curves,
    plot_frontier,
    render_markdown,
    replace_readme_section,
    write_csv,
)
from attncnn.analysis.report_runs import (  # noqa: F401  (re-exported)
    SCHEMA,
    Run,
    Setting,
    find_result_files,
    load_runs,
    parse_run,
    slug,
)
from attncnn.analysis.report_stats import PairedDiff, mean_minutes, paired_difference, time_ratio
from attncnn.errors import AttncnnError


# ---------------------------------------------------------------- claims and layout
@dataclass(frozen=True)
class Claim:
    table: str
    row: str
    dataset: str
    accuracy: float  # top-1 accuracy, %, converted from the paper's metric
    source: str      # the paper's table it comes from, e.g. "Table 3"
    label: str = ""  # what the figure is, when not simply this row's (e.g. another model's)

    def text(self) -> str:
        return f"{self.accuracy:.2f} ({self.source})"


def load_paper(path: str | Path | None = None) -> dict:
    """The table layout and claims: the packaged paper_claims.yaml, or another file."""
    if path is None:
        text = resources.files("attncnn.analysis").joinpath("paper_claims.yaml").read_text()
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise AttncnnError(f"claims file {path}: {err.strerror}") from None
    doc = yaml.safe_load(text) or {}
    doc.setdefault("tables", [])
    doc.setdefault("datasets", {})
    where = path or "paper_claims.yaml"
    doc["claims"] = [_parse_claim(c, where) for c in doc.get("claims") or []]
    _check_claims(doc, where)
    return doc


def _parse_claim(c: dict, where) -> Claim:
    try:
        metric, value = c["metric"], float(c["value"])
        if metric == "top1_error":
            accuracy = 100.0 - value
        elif metric == "top1_acc":
            accuracy = value
        else:
            raise AttncnnError(f"{where}: claim metric {metric!r} is not top1_error or top1_acc")
        return Claim(str(c["table"]), str(c["row"]), str(c["dataset"]), accuracy, str(c["source"]),
                     str(c.get("label") or ""))
    except KeyError as err:
        raise AttncnnError(f"{where}: a claim lacks the key {err.args[0]!r}") from None


def _check_claims(doc: dict, where) -> None:
    """Every claim names a cell the layout has (a typo would otherwise show nowhere)."""
    cells = {(t["id"], r["id"], d) for t in doc["tables"] for r in t.get("rows") or []
             for d in r.get("datasets", t.get("datasets") or [])}
    for c in doc["claims"]:
        if (c.table, c.row, c.dataset) not in cells:
            raise AttncnnError(f"{where}: the claim {c.text()} names table {c.table!r}, row "
                               f"{c.row!r}, data set {c.dataset!r}: no such cell in the layout")


def _kinds(claims: list[Claim]) -> dict[str, list[Claim]]:
    """Claims of one cell by `label`: figures of one model, which ought to agree."""
    kinds: dict[str, list[Claim]] = {}
    for c in claims:
        kinds.setdefault(c.label, []).append(c)
    return kinds


def _disagreeing(claims: list[Claim]) -> list[list[Claim]]:
    return [same for same in _kinds(claims).values()
            if len({round(c.accuracy, 2) for c in same}) > 1]


def _conflict(same: list[Claim], row_label: str, data_label: str) -> str:
    figures = " vs ".join(c.text() for c in same)
    if same[0].label:  # another model's figures beside this row
        return f"{same[0].label} (beside {row_label}): {figures}"
    return f"{row_label} on {data_label}: {figures}"


def claim_lines(claims: list[Claim]) -> list[str]:
    """One line per kind of claim (claims of one `label`); disagreeing figures are flagged."""
    out = []
    for label, same in _kinds(claims).items():
        what = f" ({label})" if label else ""
        if len({round(c.accuracy, 2) for c in same}) > 1:
            out.append(f"claims disagree{what}: " + " vs ".join(c.text() for c in same))
        else:
            out.append(f"claim{what}: " + " / ".join(c.text() for c in same))
    return out


# ---------------------------------------------------------------- runs -> tables
@dataclass
class Group:
    """The runs of one cell that share a Setting: the figure is their mean over seeds."""

    setting: Setting
    runs: list[Run]
    label: str = ""  # footnote key within its table, e.g. "S2"

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.finished and r.top1 is not None]

    @property
    def precisions(self) -> frozenset:
        """The precisions its runs trained in ("bf16 autocast", "float32"; None: unknown)."""
        return frozenset(r.precision for r in self.runs)

    @property
    def n(self) -> int:
        return len(self.done)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(r.top1 for r in self.done) if self.done else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None for fewer than two seeds."""
        return statistics.stdev(r.top1 for r in self.done) if self.n > 1 else None

    @property
    def by_seed(self) -> dict:
        """seed -> top-1 of the finished runs (a seed run twice: their mean)."""
        seen: dict = {}
        for r in self.done:
            seen.setdefault(r.seed, []).append(r.top1)
        return {s: statistics.fmean(v) for s, v in seen.items()}

    @property
    def minutes(self) -> float | None:
        """Mean wall time per finished run, in minutes."""
        return mean_minutes(r.wall_time_s for r in self.done)

    def text(self) -> str:
        if not self.done:
            return f"no finished run ({len(self.runs)} incomplete) [{self.label}]"
        seeds = f"{self.n} seed{'s' if self.n > 1 else ''}"
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        extra = len(self.runs) - self.n
        skipped = f", {extra} incomplete not counted" if extra else ""
        return (f"{self.mean:.2f}{spread} ({seeds}, {self.setting.epochs} ep{self._minority()}"
                f"{skipped}) [{self.label}]")

    def _minority(self) -> str:
        """", 1 in float32" where the finished seeds mix precisions: each but the most common."""
        counts = Counter(r.precision or "precision not recorded" for r in self.done)
        if len(counts) < 2:
            return ""
        return "".join(f", {n} in {p}" for p, n in counts.most_common()[1:])


@dataclass
class Cell:
    groups: list[Group]
    claims: list[Claim]
    expected: bool     # the layout has this cell ("no run" rather than "—" when empty)
    paper_table: bool  # the paper has a table for it: show its claim, or "claim: n/a"

    def lines(self) -> list[str]:
        if not self.groups and not self.expected and not self.claims:
            return ["—"]
        out = [g.text() for g in self.groups] or ["no run"]
        if not self.claims:
            return out + (["claim: n/a"] if self.paper_table else [])
        return out + claim_lines(self.claims)


@dataclass
class Comparison:
    """One setting of one row against the table's baseline row (same data and recipe)."""

    row: str
    dataset: str
    group: Group
    baseline: Group | None     # the baseline row's runs at the same data and recipe
    diff: PairedDiff | None    # None for the baseline row itself, or with no baseline runs
    minutes: float | None      # mean wall time per run
    time_ratio: float | None   # minutes / the baseline's

    @property
    def is_baseline(self) -> bool:
        return self.baseline is self.group

    @property
    def verdict(self) -> str:
        if self.is_baseline:
            return "baseline"
        if self.diff is None:
            return "no baseline run at this setting"
        return self.diff.verdict


@dataclass
class Table:
    id: str
    title: str
    datasets: list[tuple[str, str]]   # (id, label) columns
    rows: list[tuple[str, str]]       # (id, label)
    cells: dict[tuple[str, str], Cell]
    groups: list[Group]               # in footnote order
    note: str = ""
    conflicts: list[str] = field(default_factory=list)
    baseline: str | None = None       # the row differences are taken from
    comparisons: list[Comparison] = field(default_factory=list)  # one per group


def build_tables(runs: list[Run], paper: dict) -> list[Table]:
    """The paper's tables (from `paper`'s layout) filled with `runs`; extra tags add rows,
    columns and tables after the paper's own, so no run is left out."""
    layout = {t["id"]: t for t in paper["tables"]}
    order = [t["id"] for t in paper["tables"]]
    for run in runs:
        for tid in run.tables:
            if tid not in layout:
                title = ("Runs without table tags (placed by model and data)" if tid == "untagged"
                         else f"Table {tid!r} (not one of the paper's)")
                layout[tid] = {"id": tid, "title": title, "datasets": [], "rows": []}
                order.append(tid)
    return [_build_table(layout[tid], [r for r in runs if tid in r.tables], paper) for tid in order]


def _build_table(spec: dict, runs: list[Run], paper: dict) -> Table:
    names = paper["datasets"]
    datasets = list(spec.get("datasets") or [])
    rows = [(r["id"], r.get("label", r["id"])) for r in spec.get("rows") or []]
    expected = {(r["id"], d) for r in spec.get("rows") or [] for d in r.get("datasets", datasets)}
    baseline = spec.get("baseline")
    if baseline is not None and baseline not in (r for r, _ in rows):
        raise AttncnnError(f"table {spec['id']!r}: baseline {baseline!r} is not one of its rows")
    for run in runs:  # tags the layout does not know still get a row / column
        if run.dataset not in datasets:
            datasets.append(run.dataset)
        if run.row not in (r for r, _ in rows):
            rows.append((run.row, run.row))
    table = Table(spec["id"], spec.get("title", spec["id"]), [(d, names.get(d, d)) for d in datasets],
                  rows, {}, [], spec.get("note", ""), baseline=baseline)
    for row, _ in rows:
        for ds in datasets:
            groups = pool_precisions([r for r in runs if r.row == row and r.dataset == ds])
            for g in groups:
                g.runs.sort(key=lambda r: (r.seed is None, r.seed, r.path))
                table.groups.append(g)
                g.label = f"S{len(table.groups)}"
            claims = [c for c in paper["claims"]
                      if (c.table, c.row, c.dataset) == (spec["id"], row, ds)]
            table.conflicts += [_conflict(c, dict(rows)[row], names.get(ds, ds))
                                for c in _disagreeing(claims)]
            table.cells[row, ds] = Cell(groups, claims, (row, ds) in expected,
                                        bool(spec.get("source")))
    table.comparisons = _comparisons(table)
    return table


def pool_precisions(runs: list[Run]) -> list[Group]:
    """One cell's runs -> groups of one Setting. Runs of one setting in different precisions
    are pooled when no seed appears in two of them (seeds that complete each other, as when
    a CPU without bf16 units runs the seed its row lacks); where a seed was run in two
    precisions, each precision keeps its own group. Groups in order of their first run."""
    parts: dict[Setting, dict] = {}
    for run in runs:
        parts.setdefault(run.setting, {}).setdefault(run.precision, []).append(run)
    groups = []
    for setting, by_precision in parts.items():
        seeds = [{r.seed for r in rs} for rs in by_precision.values()]
        disjoint = sum(map(len, seeds)) == len(set().union(*seeds))
        if disjoint:
            groups.append(Group(setting, [r for rs in by_precision.values() for r in rs]))
        else:
            groups += [Group(setting, rs) for rs in by_precision.values()]
    order = {id(r): i for i, r in enumerate(runs)}
    return sorted(groups, key=lambda g: min(order[id(r)] for r in g.runs))


def _comparisons(table: Table) -> list[Comparison]:
    """Each setting of each row against the baseline row's runs of the same data and
    recipe (paired seed by seed); without a baseline, only the wall time."""
    out = []
    for row, _ in table.rows:
        for ds, _ in table.datasets:
            for g in table.cells[row, ds].groups:
                if table.baseline is None:
                    out.append(Comparison(row, ds, g, None, None, g.minutes, None))
                    continue
                same = [b for b in table.cells[table.baseline, ds].groups  # and a precision
                        if b.setting.recipe_key() == g.setting.recipe_key()
                        and b.precisions & g.precisions]
                base = same[0] if len(same) == 1 else None  # two baseline models: ambiguous
                if row == table.baseline:
                    base = g
                diff = None if base is None or base is g else paired_difference(g.by_seed, base.by_seed)
                ratio = None if base is None else 1.0 if base is g else time_ratio_by_machine(g, base)
                out.append(Comparison(row, ds, g, base, diff, g.minutes, ratio))
    return out


def time_ratio_by_machine(group: Group, base: Group) -> float | None:
    """The row's wall time over the baseline's, machine by machine: on each machine
    (`report_runs.machine`: device, its name, and whether a CPU computes bf16 in hardware
    where the record says) where both rows have finished runs with whole wall times, the
    ratio of their mean wall times; the mean of those ratios, or None where the rows share
    no machine. Runs of one table may come from machines that differ twofold in speed, so
    a ratio of means across machines would measure the machines."""
    def by_device(g: Group) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for r in g.done:
            if r.wall_time_s and not r.wall_time_floor:
                out.setdefault(r.device, []).append(float(r.wall_time_s))
        return out

    mine, theirs = by_device(group), by_device(base)
    ratios = [time_ratio(statistics.fmean(mine[d]), statistics.fmean(theirs[d]))
              for d in mine if d in theirs]
    return statistics.fmean(ratios) if ratios else None


# ---------------------------------------------------------------- all of it
def generate(results: list[str | Path], out_dir: str | Path | None = None,
             readme: str | Path | None = None, plot: bool = True,
             claims: str | Path | None = None) -> str:
    """Read results, build the tables, write report.md / report.csv / <table>_curves.png and
    <table>_frontier.png
    under `out_dir` (when given), refresh the README section; returns the Markdown."""
    paper = load_paper(claims)
    ids = {label: key for key, label in paper["datasets"].items()}
    files = find_result_files(results)
    runs, skipped = load_runs(files, ids)
    tables = build_tables(runs, paper)
    plots: dict[str, Path] = {}
    frontier_plots: dict[str, Path] = {}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(tables, out / "report.csv")
        if plot:
            for t in tables:
                png = out / f"{t.id}_curves.png"
                if plot_curves(t, png):
                    plots[t.id] = png
                png = out / f"{t.id}_frontier.png"
                if plot_frontier(t, png):
                    frontier_plots[t.id] = png

    def links(found: dict[str, Path], base: Path | None) -> dict[str, str] | None:
        if base is None:  # image paths as seen from the linking file
            return None
        return {k: Path(os.path.relpath(p.resolve(), base.resolve())).as_posix()
                for k, p in found.items()}

    def render(link_base: Path | None) -> str:
        return render_markdown(tables, paper, skipped=skipped, n_files=len(files),
                               n_runs=len(runs), plots=links(plots, link_base),
                               frontier_plots=links(frontier_plots, link_base))

    markdown = render(Path(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        (Path(out_dir) / "report.md").write_text("# attncnn results\n\n" + markdown)
    if readme is not None:
        replace_readme_section(readme, render(Path(readme).parent))
    return markdown
