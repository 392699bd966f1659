"""Results files -> the paper's tables: measured accuracy beside the paper's claims.

`load_runs` reads results files (docs/results-format.md), `build_tables` places each run
by its tags {table, row, dataset} (or, untagged, by model and data) into the tables laid
out in `paper_claims.yaml`, and the renderers write Markdown, CSV and accuracy-per-epoch
plots. Within a cell, runs are pooled over seeds only when everything else that changes
the figure is equal (data, split, subset size, epochs, schedule, batch, lr, model and its
arguments): a `Setting`. Different settings stay apart, each with its own line and
footnote naming its data, split, epochs, device and files, so every figure is traceable.
"""
from __future__ import annotations

import csv
import json
import os
import re
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from attncnn.errors import AttncnnError

SCHEMA = "attncnn.result/1"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


# ---------------------------------------------------------------- results files -> runs
@dataclass(frozen=True)
class Setting:
    """What must be equal for runs to be pooled (everything but the seed and the device)."""

    data_name: str
    eval_split: str
    num_train: int | None
    num_eval: int | None
    epochs: int | None
    schedule: str
    batch_size: int | None
    lr: float | None
    model: str
    model_args: str  # canonical JSON, so two settings compare as equal strings

    def describe(self) -> str:
        def count(n):
            return f"{n:,}" if isinstance(n, int) else "?"

        args = json.loads(self.model_args)
        shown = {k: v for k, v in args.items() if k in ("attention", "attention_placement",
                                                        "attention_options", "num_classes")}
        return (f"{self.data_name}, eval split `{self.eval_split}` ({count(self.num_eval)} images), "
                f"trained on {count(self.num_train)} images, {self.epochs} epoch{'s' * (self.epochs != 1)}, "
                f"{self.schedule} schedule, batch {self.batch_size}, lr {self.lr}; "
                f"model `{self.model}` {json.dumps(shown, sort_keys=True)}")


@dataclass
class Run:
    """One results file, reduced to what the report needs."""

    path: str
    run_name: str
    tables: tuple[str, ...]
    row: str
    dataset: str
    setting: Setting
    seed: int | None
    top1: float | None          # final epoch's top-1 on the eval split (not the best epoch)
    finished: bool
    device: str
    weights: str | None         # the published (repository) weights file, if any
    commit: str                 # git commit the run trained at ("+dirty": uncommitted changes)
    history: list[dict] = field(default_factory=list)
    identity: tuple = ()        # the same run found twice (runs/ and results/) counts once


def _tag_list(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


def parse_run(path: Path, doc: dict, dataset_ids: dict[str, str]) -> Run:
    """A results document -> Run; `dataset_ids` maps data display names to column ids."""
    data, recipe, env = doc.get("data", {}), doc.get("recipe", {}), doc.get("env", {})
    tags = doc.get("tags") or {}
    model = str(doc.get("model", "?"))
    model_args = doc.get("model_args") or {}
    data_name = str(data.get("name") or data.get("source") or "?")
    epochs = recipe.get("epochs")
    completed = doc.get("epochs_completed")
    status = doc.get("status", "finished")
    finished = status == "finished" and (epochs is None or completed is None or completed >= epochs)
    final = doc.get("final") or {}
    device = str(env.get("device", "?"))
    if env.get("device_name"):
        device += f" ({env['device_name']})"
    row = str(tags.get("row") or model)
    if not tags.get("row") and model_args.get("attention") and model_args.get("attention_placement"):
        row += f" ({model_args['attention_placement']})"
    setting = Setting(
        data_name=data_name, eval_split=str(data.get("eval_split", "?")),
        num_train=data.get("num_train"), num_eval=data.get("num_eval"), epochs=epochs,
        schedule=str(recipe.get("schedule", "?")), batch_size=recipe.get("batch_size"),
        lr=recipe.get("lr"), model=model, model_args=json.dumps(model_args, sort_keys=True),
    )
    return Run(
        path=str(path), run_name=str(doc.get("run_name", path.stem)),
        tables=_tag_list(tags.get("table")) or ("untagged",), row=row,
        dataset=str(tags.get("dataset") or dataset_ids.get(data_name) or slug(data_name)),
        setting=setting, seed=doc.get("seed"),
        top1=final.get("top1") if isinstance(final.get("top1"), (int, float)) else None,
        finished=finished, device=device, weights=_published_weights(doc),
        commit=_commit(env),
        history=list(doc.get("history") or []),
        identity=(doc.get("run_name"), doc.get("seed"), doc.get("started_at"), doc.get("finished_at")),
    )


def _published_weights(doc: dict) -> str | None:
    """The weights file published with the run (`attncnn publish`), not the run directory's
    copy, which lives outside the repository."""
    value = doc.get("published_weights")
    if not isinstance(value, str) or not value.strip():
        return None
    return value


def _commit(env: dict) -> str:
    commit = str(env.get("git_commit") or "unknown")[:7]
    return commit + ("+dirty" if env.get("git_dirty") else "")


def find_result_files(paths: list[str | Path]) -> list[Path]:
    """Files named, plus every *.json below each directory named (sorted, no repeats)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(p.rglob("*.json")))
        elif p.is_file():
            found.append(p)
        else:
            raise AttncnnError(f"results path {p} does not exist")
    return list(dict.fromkeys(found))


def load_runs(paths: list[str | Path], dataset_ids: dict[str, str] | None = None
              ) -> tuple[list[Run], list[str]]:
    """(runs, skipped): JSON files of another schema are skipped and named, not fatal."""
    runs, skipped, seen = [], [], set()
    for path in find_result_files(paths):
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AttncnnError(f"{path}: not a readable JSON results file ({err})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            skipped.append(f"{path} (not {SCHEMA})")
            continue
        run = parse_run(path, doc, dataset_ids or {})
        if run.identity in seen and run.identity[2] is not None:
            skipped.append(f"{path} (duplicate of a run already read)")
            continue
        seen.add(run.identity)
        runs.append(run)
    return runs, skipped


# ---------------------------------------------------------------- claims and layout
@dataclass(frozen=True)
class Claim:
    table: str
    row: str
    dataset: str
    accuracy: float  # top-1 accuracy, %, converted from the paper's metric
    source: str      # the paper's table it comes from, e.g. "Table 3"

    def text(self) -> str:
        return f"{self.accuracy:.2f} ({self.source})"


def load_paper(path: str | Path | None = None) -> dict:
    """The table layout and claims: the packaged paper_claims.yaml, or another file."""
    if path is None:
        text = resources.files("attncnn").joinpath("paper_claims.yaml").read_text()
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise AttncnnError(f"claims file {path}: {err.strerror}") from None
    doc = yaml.safe_load(text) or {}
    doc.setdefault("tables", [])
    doc.setdefault("datasets", {})
    doc["claims"] = [_parse_claim(c, path or "paper_claims.yaml") for c in doc.get("claims") or []]
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
        return Claim(str(c["table"]), str(c["row"]), str(c["dataset"]), accuracy, str(c["source"]))
    except KeyError as err:
        raise AttncnnError(f"{where}: a claim lacks the key {err.args[0]!r}") from None


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
    def n(self) -> int:
        return len(self.done)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(r.top1 for r in self.done) if self.done else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None for fewer than two seeds."""
        return statistics.stdev(r.top1 for r in self.done) if self.n > 1 else None

    def text(self) -> str:
        if not self.done:
            return f"no finished run ({len(self.runs)} incomplete) [{self.label}]"
        seeds = f"{self.n} seed{'s' if self.n > 1 else ''}"
        spread = f" ± {self.std:.2f}" if self.std is not None else ""
        extra = len(self.runs) - self.n
        skipped = f", {extra} incomplete not counted" if extra else ""
        return f"{self.mean:.2f}{spread} ({seeds}, {self.setting.epochs} ep{skipped}) [{self.label}]"


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
        values = {round(c.accuracy, 2) for c in self.claims}
        if not self.claims and not self.paper_table:
            return out
        if not self.claims:
            out.append("claim: n/a")
        elif len(values) > 1:
            out.append("claims disagree: " + " vs ".join(c.text() for c in self.claims))
        else:
            out.append("claim: " + " / ".join(c.text() for c in self.claims))
        return out


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
    for run in runs:  # tags the layout does not know still get a row / column
        if run.dataset not in datasets:
            datasets.append(run.dataset)
        if run.row not in (r for r, _ in rows):
            rows.append((run.row, run.row))
    table = Table(spec["id"], spec.get("title", spec["id"]),
                  [(d, names.get(d, d)) for d in datasets], rows, {}, [], spec.get("note", ""))
    for row, _ in rows:
        for ds in datasets:
            groups: dict[Setting, Group] = {}
            for run in runs:
                if run.row == row and run.dataset == ds:
                    groups.setdefault(run.setting, Group(run.setting, [])).runs.append(run)
            for g in groups.values():
                g.runs.sort(key=lambda r: (r.seed is None, r.seed, r.path))
                table.groups.append(g)
                g.label = f"S{len(table.groups)}"
            claims = [c for c in paper["claims"]
                      if (c.table, c.row, c.dataset) == (spec["id"], row, ds)]
            if len({round(c.accuracy, 2) for c in claims}) > 1:
                table.conflicts.append(f"{row} on {names.get(ds, ds)}: "
                                       + " vs ".join(c.text() for c in claims))
            table.cells[row, ds] = Cell(list(groups.values()), claims, (row, ds) in expected,
                                        bool(spec.get("source")))
    return table


# ---------------------------------------------------------------- Markdown, CSV, README
def render_markdown(tables: list[Table], paper: dict, *, skipped: list[str] = (),
                    plots: dict[str, str] | None = None, n_files: int | None = None,
                    n_runs: int | None = None) -> str:
    """The tables as Markdown; `plots` maps a table id to an image path to link."""
    claimed = any(paper["claims"])
    out = [
        "Top-1 accuracy (%) on each run's evaluation split at its final epoch (never the best "
        "epoch: choosing that on the test split would be tuning on test), as mean ± sample "
        "standard deviation over seeds. Runs whose data, split, training-set size, epochs or "
        "recipe differ are never pooled: each setting has its own line and footnote [S#]. "
        + ("The paper's claims are converted to accuracy (100 − top-1 error)."
           if claimed else (paper.get("claims_note") or "No paper claims are recorded.").strip()),
        "",
    ]
    if n_files is not None:
        used = f", {n_runs} of them results" if n_runs is not None else ""
        out += [f"Generated by `attncnn report` from {n_files} JSON file(s){used}.", ""]
    for t in tables:
        out += [f"### {t.title}", ""]
        if t.note:
            out += [t.note.strip(), ""]
        if t.conflicts:
            out += ["The paper's tables disagree for the same model and data; both figures are "
                    "shown: " + "; ".join(t.conflicts) + ".", ""]
        out.append("| Model | " + " | ".join(label for _, label in t.datasets) + " |")
        out.append("|---|" + "---|" * len(t.datasets))
        for row, label in t.rows:
            cells = ["<br>".join(t.cells[row, ds].lines()) for ds, _ in t.datasets]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
        if t.groups:
            out.append("Settings and files:")
            out.append("")
            for g in t.groups:
                out.append(f"- [{g.label}] {g.setting.describe()}; " + _provenance(g))
            out.append("")
        else:
            out += ["No runs yet.", ""]
        if plots and t.id in plots:
            out += [f"![Test accuracy per epoch, {t.title}]({plots[t.id]})", ""]
    if skipped:
        out += ["Files not used: " + "; ".join(skipped) + ".", ""]
    return "\n".join(out).rstrip() + "\n"


def _provenance(g: Group) -> str:
    devices = sorted({r.device for r in g.runs})
    seeds = ", ".join(str(r.seed) for r in g.runs)
    if any(r.top1 is not None for r in g.runs):  # the spread behind mean ± std, run by run
        seeds += " (top-1 " + ", ".join("n/a" if r.top1 is None else f"{r.top1:.2f}"
                                        for r in g.runs) + ")"
    files = ", ".join(f"`{r.path}`" + ("" if r.finished else " (incomplete)") for r in g.runs)
    commits = ", ".join(sorted({r.commit for r in g.runs}))
    text = f"device {', '.join(devices)}; commit {commits}; seeds {seeds}; files {files}"
    weights = [r.weights for r in g.runs if r.weights]
    if weights:
        text += "; weights " + ", ".join(f"`{w}`" for w in weights)
    if len(weights) < len(g.runs):
        text += f"; weights of {len(g.runs) - len(weights)} run(s) not published"
    return text


CSV_FIELDS = ["table", "row", "dataset", "setting", "data", "eval_split", "num_train", "num_eval",
              "epochs", "schedule", "batch_size", "lr", "model", "model_args", "device", "commit", "n_seeds",
              "seeds", "top1_mean", "top1_std", "claims", "files", "weights"]


def write_csv(tables: list[Table], path: str | Path) -> None:
    """One line per (table, row, data set, setting); a cell without runs gets one line
    with n_seeds 0, so the CSV shows what is missing as the Markdown does."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for t in tables:
            for row, _ in t.rows:
                for ds, _ in t.datasets:
                    cell = t.cells[row, ds]
                    base = {"table": t.id, "row": row, "dataset": ds, "n_seeds": 0,
                            "claims": "; ".join(c.text() for c in cell.claims)}
                    if not cell.groups and (cell.expected or cell.claims):
                        w.writerow(base)
                    for g in cell.groups:
                        s = g.setting
                        w.writerow({**base, "setting": g.label, "data": s.data_name,
                                    "eval_split": s.eval_split, "num_train": s.num_train,
                                    "num_eval": s.num_eval, "epochs": s.epochs,
                                    "schedule": s.schedule, "batch_size": s.batch_size,
                                    "lr": s.lr, "model": s.model, "model_args": s.model_args,
                                    "device": "; ".join(sorted({r.device for r in g.runs})),
                                    "commit": " ".join(sorted({r.commit for r in g.runs})),
                                    "n_seeds": g.n, "seeds": " ".join(str(r.seed) for r in g.done),
                                    "top1_mean": "" if g.mean is None else f"{g.mean:.4f}",
                                    "top1_std": "" if g.std is None else f"{g.std:.4f}",
                                    "files": " ".join(r.path for r in g.runs),
                                    "weights": " ".join(r.weights for r in g.runs if r.weights)})


def replace_readme_section(readme: str | Path, markdown: str) -> None:
    """Put `markdown` between the README's results markers, keeping everything else."""
    path = Path(readme)
    try:
        text = path.read_text()
    except OSError as err:
        raise AttncnnError(f"README {path}: {err.strerror}") from None
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise AttncnnError(f"{path} lacks the markers {BEGIN} ... {END} (in that order)")
    path.write_text(text[: start + len(BEGIN)] + "\n" + markdown.rstrip() + "\n" + text[end:])


# ---------------------------------------------------------------- plots
def plot_curves(table: Table, path: str | Path) -> bool:
    """Eval top-1 per epoch, one panel per data set, one line per row and setting (mean
    over seeds, band = min..max). Returns False (and writes nothing) without history."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    panels = [(ds, label) for ds, label in table.datasets
              if any(r.history for (_, d), c in table.cells.items() if d == ds
                     for g in c.groups for r in g.runs)]
    if not panels:
        return False
    fig = Figure(figsize=(5.5 * len(panels), 4.0), tight_layout=True)
    FigureCanvasAgg(fig)
    labels = dict(table.rows)
    for i, (ds, ds_label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for row, _ in table.rows:
            for g in table.cells[row, ds].groups:
                curves: dict[int, list[float]] = {}
                for r in g.runs:
                    for h in r.history:
                        if h.get("eval_top1") is not None and h.get("epoch") is not None:
                            curves.setdefault(int(h["epoch"]), []).append(float(h["eval_top1"]))
                if not curves:
                    continue
                epochs = sorted(curves)
                mean = [statistics.fmean(curves[e]) for e in epochs]
                line, = ax.plot(epochs, mean, label=f"{labels[row]} [{g.label}]")
                ax.fill_between(epochs, [min(curves[e]) for e in epochs],
                                [max(curves[e]) for e in epochs], alpha=0.2,
                                color=line.get_color(), linewidth=0)
        ax.set_title(ds_label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("eval top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return True


# ---------------------------------------------------------------- all of it
def generate(results: list[str | Path], out_dir: str | Path | None = None,
             readme: str | Path | None = None, plot: bool = True,
             claims: str | Path | None = None) -> str:
    """Read results, build the tables, write report.md / report.csv / <table>_curves.png
    under `out_dir` (when given), refresh the README section; returns the Markdown."""
    paper = load_paper(claims)
    ids = {label: key for key, label in paper["datasets"].items()}
    files = find_result_files(results)
    runs, skipped = load_runs(files, ids)
    tables = build_tables(runs, paper)
    plots: dict[str, Path] = {}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(tables, out / "report.csv")
        if plot:
            for t in tables:
                png = out / f"{t.id}_curves.png"
                if plot_curves(t, png):
                    plots[t.id] = png

    def links(base: Path) -> dict[str, str]:  # image paths as seen from the linking file
        return {k: Path(os.path.relpath(p.resolve(), base.resolve())).as_posix()
                for k, p in plots.items()}

    def render(link_base: Path | None) -> str:
        return render_markdown(tables, paper, skipped=skipped, n_files=len(files),
                               n_runs=len(runs), plots=links(link_base) if link_base else None)

    markdown = render(Path(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        (Path(out_dir) / "report.md").write_text("# attncnn results\n\n" + markdown)
    if readme is not None:
        replace_readme_section(readme, render(Path(readme).parent))
    return markdown
