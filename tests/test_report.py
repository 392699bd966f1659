"""`attncnn report`: results files -> tables with mean ± std, claims, CSV, README, plots."""
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attncnn.analysis.report import (
    BEGIN,
    END,
    build_tables,
    generate,
    load_paper,
    load_runs,
    render_markdown,
    replace_readme_section,
)
from attncnn.analysis.report_stats import mean_minutes, paired_difference, t975, time_ratio
from attncnn.cli import main
from attncnn.errors import AttncnnError

JPEG = "CIFAR-10 (JPEG q75 copy)"


def write_result(folder: Path, *, model="attn_resnet110_cifar", table="table1", row="attn_resnet110",
                 dataset="cifar10_jpeg", seed=0, top1=90.0, epochs=4, data_name=JPEG,
                 completed=None, status="finished", history=True, name=None,
                 wall=None, recipe=None, device_name="NVIDIA H100", env=None) -> Path:
    """A results file as `attncnn train` writes it (docs/results-format.md)."""
    completed = epochs if completed is None else completed
    doc = {
        "schema": "attncnn.result/1",
        "run_name": name or f"{model}-{dataset}-e{epochs}-s{seed}",
        "model": model,
        "model_args": {"depth": 110, "attention": "softmax", "attention_placement": "stage"},
        "data": {"source": "folder", "name": data_name, "train_split": "train",
                 "eval_split": "test", "num_train": 50000, "num_eval": 5000},
        "recipe": {"epochs": epochs, "batch_size": 128, "lr": 0.1, "schedule": "step",
                   **(recipe or {})},
        "seed": seed,
        "tags": {} if table is None else {"table": table, "row": row, "dataset": dataset},
        "epochs_completed": completed,
        "status": status,
        "final": {"top1": top1},
        "history": [{"epoch": e + 1, "eval_top1": top1 * (e + 1) / completed}
                    for e in range(completed)] if history else [],
        "env": {"device": "cuda", "device_name": device_name, "git_commit": "0123456789abcdef",
                "git_dirty": False, **(env or {})},
        "started_at": f"2026-11-25T15:{seed:02d}:00Z",
        "wall_time_s": wall,
        "weights": f"runs/x/{model}-s{seed}/model.safetensors",
        "published_weights": f"results/weights/{model}-s{seed}.safetensors",
    }
    path = folder / f"{doc['run_name']}.json"
    path.write_text(json.dumps(doc))
    return path


def claims_file(tmp_path: Path, claims: list[dict]) -> Path:
    """The packaged layout with `claims` instead of the packaged list."""
    import yaml

    from attncnn.analysis import report

    doc = yaml.safe_load(Path(report.__file__).with_name("paper_claims.yaml").read_text())
    doc["claims"] = claims
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def table_rows(markdown: str, title_start: str) -> list[list[str]]:
    """The body rows of the Markdown table under the heading starting with `title_start`."""
    lines = markdown.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("### " + title_start))
    i = next(k for k in range(i, len(lines)) if lines[k].startswith("| Model |"))
    rows = []
    for line in lines[i + 2:]:  # after the header line and the |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [r for r in rows if not set(r[0]) <= {"-"}]


def test_tables_have_the_paper_layout_shape(tmp_path):
    paper = load_paper()
    tables = build_tables([], paper)
    assert [t.id for t in tables] == [t["id"] for t in paper["tables"]]
    md = render_markdown(tables, paper)
    for spec in paper["tables"]:
        rows = table_rows(md, spec["title"])
        assert len(rows) == len(spec["rows"])
        assert all(len(r) == 1 + len(spec["datasets"]) for r in rows)


def test_cell_is_mean_and_sample_std_over_seeds(tmp_path):
    accs = [91.2, 92.9, 90.4]
    for seed, acc in enumerate(accs):
        write_result(tmp_path, seed=seed, top1=acc)
    md = generate([tmp_path], plot=False)
    row = next(r for r in table_rows(md, "Tables 1 and 3") if r[0].startswith("Attention ResNet-110"))
    jpeg_cell = row[2]
    expected = f"{np.mean(accs):.2f} ± {np.std(accs, ddof=1):.2f} (3 seeds, 4 ep)"
    assert jpeg_cell.startswith(expected)
    assert row[1].startswith("no run")  # official CIFAR-10: no run given


def test_missing_cells_say_no_run_and_inapplicable_cells_a_dash(tmp_path):
    write_result(tmp_path)
    md = generate([tmp_path], plot=False)
    rows = {r[0]: r for r in table_rows(md, "Tables 1 and 3")}
    assert rows["ResNet-110"][1].startswith("no run")
    assert rows["ResNet-110"][4] == "—"          # no ImageNet column for a CIFAR model
    assert rows["ResNet-50"][4].startswith("no run")


def test_different_epochs_or_data_are_never_pooled(tmp_path):
    write_result(tmp_path, seed=0, top1=80.0, epochs=4)
    write_result(tmp_path, seed=1, top1=82.0, epochs=4)
    write_result(tmp_path, seed=0, top1=93.0, epochs=200)
    write_result(tmp_path, seed=0, top1=70.0, epochs=4, data_name="CIFAR-10", name="other-data")
    runs, _ = load_runs([tmp_path])
    table = build_tables(runs, load_paper())[0]
    groups = table.cells["attn_resnet110", "cifar10_jpeg"].groups
    assert sorted((g.setting.epochs, g.setting.data_name, g.n) for g in groups) == [
        (4, "CIFAR-10", 1), (4, JPEG, 2), (200, JPEG, 1)]
    means = {(g.setting.epochs, g.setting.data_name): g.mean for g in groups}
    assert means[4, JPEG] == pytest.approx(81.0)
    md = render_markdown([table], load_paper())
    assert md.count("(1 seed, 200 ep)") == 1


def test_runs_of_another_recipe_are_never_pooled(tmp_path):
    """Flip TTA or another weight decay make another setting, with its own footnote naming
    the TTA; the footnote names the runs' precision too."""
    write_result(tmp_path, seed=0, top1=80.0, recipe={"amp": False})
    write_result(tmp_path, seed=1, top1=82.0, recipe={"amp": False})
    write_result(tmp_path, seed=2, top1=85.0, recipe={"amp": True, "eval_flip": True}, name="bf16")
    write_result(tmp_path, seed=2, top1=70.0, recipe={"amp": False, "weight_decay": 5e-4}, name="wd")
    runs, _ = load_runs([tmp_path])
    table = build_tables(runs, load_paper())[0]
    groups = table.cells["attn_resnet110", "cifar10_jpeg"].groups
    assert sorted((g.n, g.mean) for g in groups) == [(1, 70.0), (1, 85.0), (2, 81.0)]
    md = render_markdown([table], load_paper())
    assert md.count("lr 0.1, flip test-time augmentation; model") == 1
    assert md.count("lr 0.1, weight decay 0.0005; model") == 1
    assert md.count("; precision bf16 autocast; commit") == 1
    assert md.count("; precision float32; commit") == 2


def cpu_row(tmp_path, model, row, seeds_top1, *, amp=True, wall=600.0,
            device_name="2-core CPU (Intel Xeon), 1 torch threads", bf16=None):
    for seed, top1 in seeds_top1.items():
        write_result(tmp_path, model=model, row=row, seed=seed, top1=top1, table="cpu_cifar10",
                     dataset="cifar10_jpeg", epochs=24, recipe={"amp": amp}, wall=wall,
                     device_name=device_name, name=f"{row}-{'bf16' if amp else 'fp32'}-s{seed}",
                     env={"device": "cpu", **({} if bf16 is None else {"cpu_bf16": bf16})})


def test_a_seed_in_another_precision_completes_its_rows_seeds(tmp_path):
    """A CPU without bf16 units trains the missing seed in float32: pooled with the row's
    bf16 seeds, named seed by seed, paired with the baseline's bf16 seed."""
    epyc = "2-core CPU (AMD EPYC), 1 torch threads"
    cpu_row(tmp_path, "resnet20_cifar", "resnet20", {0: 80.0, 1: 81.0, 2: 82.0}, wall=1200.0)
    cpu_row(tmp_path, "se_resnet20_cifar", "se_resnet20", {0: 81.0, 1: 83.0}, wall=1800.0)
    cpu_row(tmp_path, "se_resnet20_cifar", "se_resnet20", {2: 85.0}, amp=False, wall=9000.0,
            device_name=epyc, bf16=False)
    out = tmp_path / "out"
    md = generate([tmp_path], out_dir=out, plot=False)
    runs, _ = load_runs([tmp_path])
    table = next(t for t in build_tables(runs, load_paper()) if t.id == "cpu_cifar10")
    (se,) = table.cells["se_resnet20", "cifar10_jpeg"].groups
    assert se.n == 3 and se.mean == pytest.approx(83.0)
    assert se.text() == "83.00 ± 2.00 (3 seeds, 24 ep, 1 in float32) [S2]"  # the table's cell
    section = md[md.index("### CPU tier"):md.index("### Short-budget")]
    line = next(x for x in section.splitlines() if x.startswith("| + SE") and " min" in x)
    assert "81.00 (s0, bf16 autocast), 83.00 (s1, bf16 autocast), 85.00 (s2, float32)" in line
    assert "| +2.00 (3 seeds) |" in line
    # minutes per machine, not a mean of a 30-minute and a 150-minute machine
    assert "30.0 min (2 runs, Intel Xeon); 150.0 min (1 run, AMD EPYC; no bf16 in hardware)" in line
    assert line.endswith("| 1.50× |")  # the ratio from the machine both rows ran on
    assert "precision bf16 autocast (seeds 0, 1), float32 (seed 2); commit" in section
    rows = {r["row"]: r for r in csv.DictReader((out / "report.csv").open())
            if r["table"] == "cpu_cifar10"}
    assert rows["se_resnet20"]["precision"] == "bf16 autocast (seeds 0, 1), float32 (seed 2)"
    assert rows["se_resnet20"]["paired_seeds"] == "0 1 2"
    assert "AMD EPYC), 1 torch threads; no bf16 in hardware): 150.0000 (1)" in \
        rows["se_resnet20"]["wall_min_by_machine"]
    base = next(x for x in section.splitlines() if x.startswith("| ResNet-20") and " min" in x)
    assert "80.00 (s0), 81.00 (s1), 82.00 (s2)" in base  # one precision: not named per seed


def test_a_seed_run_in_two_precisions_keeps_the_precisions_apart(tmp_path):
    """Where a seed was trained in both precisions the runs compare precisions: two groups,
    each paired only with a baseline that shares its precision."""
    cpu_row(tmp_path, "resnet20_cifar", "resnet20", {0: 80.0, 1: 81.0}, amp=False)
    cpu_row(tmp_path, "se_resnet20_cifar", "se_resnet20", {0: 81.0, 1: 83.0}, amp=False)
    cpu_row(tmp_path, "se_resnet20_cifar", "se_resnet20", {0: 84.0, 1: 86.0, 2: 85.0})
    runs, _ = load_runs([tmp_path])
    table = next(t for t in build_tables(runs, load_paper()) if t.id == "cpu_cifar10")
    groups = table.cells["se_resnet20", "cifar10_jpeg"].groups
    assert sorted((g.n, g.mean, tuple(g.precisions)) for g in groups) == [
        (2, 82.0, ("float32",)), (3, 85.0, ("bf16 autocast",))]
    verdicts = {tuple(c.group.precisions): c.verdict for c in table.comparisons if c.row == "se_resnet20"}
    assert verdicts[("bf16 autocast",)] == "no baseline run at this setting"
    assert verdicts[("float32",)] != "no baseline run at this setting"


def test_short_machine_names_the_cpu_and_its_bf16():
    from attncnn.analysis.report_render import short_machine

    assert short_machine("cpu (2-core CPU (Intel(R) Xeon(R) Processor), 1 torch threads)") == \
        "Intel(R) Xeon(R) Processor"
    assert short_machine("cpu (2-core CPU (AMD EPYC), 1 torch threads; no bf16 in hardware)") == \
        "AMD EPYC; no bf16 in hardware"
    assert short_machine("cuda (NVIDIA H100)") == "cuda (NVIDIA H100)"


def test_flip_tta_of_a_recipe_that_predates_it_comes_from_the_config(tmp_path):
    """Records written before the recipe stated eval_flip pool with later ones of the same
    setting: their config's data section says whether they flipped."""
    old = write_result(tmp_path, seed=0, top1=80.0, name="old")
    doc = json.loads(old.read_text())
    old.write_text(json.dumps(doc | {"config": {"data": {"eval_flip": True}}}))
    write_result(tmp_path, seed=1, top1=82.0, recipe={"eval_flip": True}, name="new")
    write_result(tmp_path, seed=2, top1=60.0, name="older")   # no config either: no flip
    runs, _ = load_runs([tmp_path])
    groups = build_tables(runs, load_paper())[0].cells["attn_resnet110", "cifar10_jpeg"].groups
    assert sorted((g.n, g.mean) for g in groups) == [(1, 60.0), (2, 81.0)]
    assert {g.setting.describe().count("flip test-time") for g in groups} == {0, 1}


def test_incomplete_runs_are_listed_but_not_counted(tmp_path):
    write_result(tmp_path, seed=0, top1=80.0)
    write_result(tmp_path, seed=1, top1=10.0, completed=2, status="interrupted")
    runs, _ = load_runs([tmp_path])
    group = build_tables(runs, load_paper())[0].cells["attn_resnet110", "cifar10_jpeg"].groups[0]
    assert (group.n, group.mean, group.std) == (1, 80.0, None)
    assert "1 incomplete not counted" in group.text()


def test_conflicting_claims_are_both_shown_and_flagged(tmp_path):
    claims = claims_file(tmp_path, [
        {"table": "table1", "row": "resnet110", "dataset": "cifar10", "metric": "top1_error",
         "value": 6.5, "source": "Table 1"},
        {"table": "table1", "row": "resnet110", "dataset": "cifar10", "metric": "top1_error",
         "value": 6.1, "source": "Table 3"},
        {"table": "table1", "row": "attn_resnet110", "dataset": "cifar10", "metric": "top1_acc",
         "value": 94.0, "source": "Table 1"},
    ])
    results = tmp_path / "results"
    results.mkdir()
    md = generate([results], claims=claims, plot=False)
    rows = {r[0]: r for r in table_rows(md, "Tables 1 and 3")}
    assert "claims disagree: 93.50 (Table 1) vs 93.90 (Table 3)" in rows["ResNet-110"][1]
    assert "claim: 94.00 (Table 1)" in rows["Attention ResNet-110 (paper)"][1]
    assert "The paper's tables disagree" in md and "100 − top-1 error" in md


def test_without_claims_every_paper_cell_says_claim_na(tmp_path):
    import yaml

    path = claims_file(tmp_path, [])
    doc = yaml.safe_load(path.read_text())
    doc["claims_note"] = "A note saying why there are no claims."
    path.write_text(yaml.safe_dump(doc))
    results = tmp_path / "results"
    results.mkdir()
    md = generate([results], claims=path, plot=False)
    rows = table_rows(md, "Tables 1 and 3")
    assert all("claim: n/a" in cell for r in rows for cell in r[1:] if cell != "—")
    assert "A note saying why there are no claims." in md and "100 − top-1 error" not in md


def test_provenance_names_files_weights_device_and_data(tmp_path):
    path = write_result(tmp_path)
    md = generate([tmp_path], plot=False)
    assert str(path) in md and "results/weights/attn_resnet110_cifar-s0.safetensors" in md
    assert "cuda (NVIDIA H100)" in md and f"{JPEG}, eval split `test` (5,000 images)" in md
    assert "commit 0123456" in md
    assert "seeds 0 (top-1 90.00)" in md  # each run's own figure beside the mean
    assert "runs/x/" not in md  # the run directory's copy is not what readers can re-check


def test_unpublished_weights_are_said_to_be_missing(tmp_path):
    path = write_result(tmp_path)
    doc = json.loads(path.read_text())
    del doc["published_weights"]
    path.write_text(json.dumps(doc))
    md = generate([tmp_path], plot=False)
    assert "weights of 1 run(s) not published" in md and "safetensors" not in md


def test_other_json_is_skipped_and_duplicates_count_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_result(tmp_path / "a", top1=80.0)
    write_result(tmp_path / "b", top1=80.0)  # the same run copied to results/
    (tmp_path / "bench.json").write_text(json.dumps({"schema": "attncnn.bench/1"}))
    runs, skipped = load_runs([tmp_path])
    assert len(runs) == 1 and len(skipped) == 2
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AttncnnError, match="broken.json"):
        load_runs([tmp_path])


def test_eval_records_beside_a_run_are_not_runs(tmp_path):
    """`attncnn eval --run RUN` writes RUN/eval-<split>/results.json with the same schema and
    "kind": "eval"; reporting a runs folder must not count it as another (untagged) run."""
    write_result(tmp_path, top1=80.0)
    (tmp_path / "eval-test").mkdir()
    (tmp_path / "eval-test" / "results.json").write_text(json.dumps(
        {"schema": "attncnn.result/1", "kind": "eval", "model": "attn_resnet110_cifar",
         "data": {"source": "folder", "name": JPEG, "split": "test"}, "final": {"top1": 80.0}}))
    runs, skipped = load_runs([tmp_path])
    assert len(runs) == 1 and runs[0].tables == ("table1",)
    assert len(skipped) == 1 and "eval record" in skipped[0]


def test_untagged_runs_get_their_own_table(tmp_path):
    write_result(tmp_path, table=None, model="resnet20_cifar", top1=75.0)
    runs, _ = load_runs([tmp_path], {JPEG: "cifar10_jpeg"})
    table = build_tables(runs, load_paper())[-1]
    assert table.id == "untagged"
    assert table.cells["resnet20_cifar (stage)", "cifar10_jpeg"].groups[0].mean == 75.0


def test_csv_has_one_line_per_setting_and_per_missing_cell(tmp_path):
    for seed, acc in enumerate([88.0, 90.0]):
        write_result(tmp_path, seed=seed, top1=acc)
    out = tmp_path / "out"
    generate([tmp_path], out_dir=out, plot=False)
    rows = list(csv.DictReader((out / "report.csv").open()))
    measured = [r for r in rows if r["n_seeds"] != "0"]
    # the run is tagged for table1 only, so it appears once
    assert [(r["table"], r["row"], r["dataset"]) for r in measured] == [
        ("table1", "attn_resnet110", "cifar10_jpeg")]
    assert float(measured[0]["top1_mean"]) == pytest.approx(89.0)
    assert float(measured[0]["top1_std"]) == pytest.approx(np.std([88.0, 90.0], ddof=1), abs=1e-4)
    missing = {(r["table"], r["row"], r["dataset"]) for r in rows if r["n_seeds"] == "0"}
    assert ("table1", "resnet110", "cifar10") in missing
    assert ("table1", "resnet110", "imagenet") not in missing  # not a cell of the paper's table


def test_readme_section_is_replaced_between_markers_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_result(Path("."), top1=88.0)
    readme = Path("README.md")
    readme.write_text(f"# Title\n\nintro\n\n{BEGIN}\nold tables\n{END}\n\n## After\n")
    generate(["."], out_dir="out", readme=readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n" + BEGIN + "\n")
    assert text.endswith(END + "\n\n## After\n")
    assert "old tables" not in text and "88.00 (1 seed, 4 ep)" in text
    assert "](out/table1_curves.png)" in text  # image links work from the README's folder
    generate(["."], out_dir="out", readme=readme)
    assert readme.read_text() == text  # regenerating changes nothing


def test_readme_without_markers_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(AttncnnError, match="results:begin"):
        replace_readme_section(readme, "x")
    assert readme.read_text() == "# no markers\n"


def test_curves_png_decodes(tmp_path):
    for seed, acc in enumerate([70.0, 74.0]):
        write_result(tmp_path, seed=seed, top1=acc)
    write_result(tmp_path, row="resnet110", model="resnet110_cifar", top1=72.0)
    out = tmp_path / "out"
    md = generate([tmp_path], out_dir=out)
    png = out / "table1_curves.png"
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        assert len(set(np.asarray(im.convert("L")).ravel().tolist())) > 2  # not blank
    assert "](table1_curves.png)" in md
    assert not (out / "cpu_short_curves.png").exists()  # no history there: no plot


def test_cli_report_writes_files_and_rejects_missing_paths(tmp_path, capsys):
    write_result(tmp_path, top1=88.0)
    out = tmp_path / "out"
    assert main(["report", "--results", str(tmp_path), "--out", str(out), "--no-plot"]) == 0
    assert "88.00 (1 seed" in capsys.readouterr().out
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()
    assert main(["report", "--results", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


# ---------------------------------------------------------------- the paper's claims
PAPER = Path(__file__).resolve().parents[1] / ".." / "shared" / "paper" / "paper.txt"
# the paper's row names -> the layout's rows (its ImageNet column -> the ResNet-50 rows)
PAPER_ROWS = {"ResNet-110": "resnet110", "DenseNet-BC": "densenet_bc100_k12",
              "SE-ResNet-110": "se_resnet110", "Squeeze-and-Excitation": "se_resnet110",
              "CBAM-ResNet-110": "cbam_resnet110", "Ours": "attn_resnet110",
              "Baseline CNN": "resnet110", "CNN without attention": "resnet110",
              "Attention-based CNN": "attn_resnet110", "Full model": "attn_resnet110"}
IMAGENET_ROWS = {"resnet110": "resnet50", "se_resnet110": "se_resnet50",
                 "cbam_resnet110": "cbam_resnet50", "attn_resnet110": "attn_resnet50"}
COLUMNS = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "ImageNet": "imagenet"}


def paper_tables(text: str) -> set[tuple]:
    """(table id, row, data set, accuracy, source) for every figure of the paper's Tables 1-4."""
    out, lines = set(), text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"Table (\d):", line)
        if not m:
            continue
        source = f"Table {m.group(1)}"
        head = next(k for k in range(i + 1, len(lines)) if "\t" in lines[k])
        columns = [COLUMNS[c] for c in lines[head].split("\t")[1:]]
        for body in lines[head + 1:]:
            if "\t" not in body:
                break
            name, *values = body.split("\t")
            name = re.sub(r"</?b>", "", name)
            row = next(r for p, r in PAPER_ROWS.items() if name.startswith(p))
            for ds, value in zip(columns, values):
                acc = float(re.sub(r"</?b>|%", "", value))
                if ds == "imagenet":
                    if row not in IMAGENET_ROWS:  # DenseNet-BC's ImageNet figure: no row
                        continue
                    row_here = IMAGENET_ROWS[row]
                else:
                    row_here = row
                table = "table1" if source in ("Table 1", "Table 3") else "table2"
                out.add((table, row_here, ds, acc, source))
    return out


def test_packaged_claims_parse_and_each_names_a_cell_of_the_layout():
    paper = load_paper()
    assert len(paper["claims"]) > 30
    layout = {t["id"]: t for t in paper["tables"]}
    for c in paper["claims"]:
        spec = layout[c.table]
        row = next(r for r in spec["rows"] if r["id"] == c.row)
        assert c.dataset in row.get("datasets", spec["datasets"]), c
        assert c.source in {"Table 1", "Table 2", "Table 3", "Table 4"}, c
        assert 0 < c.accuracy < 100
    assert "could not be retrieved" not in (paper.get("claims_note") or "")
    assert "1.2%, 1.5%" in paper["claims_note"] and "0.5%, 1.2%" in paper["claims_note"]


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper's text is not in this checkout")
def test_table_claims_are_exactly_the_papers_tables():
    """Every figure of Tables 1-4 is recorded, with its own table, and nothing else."""
    expected = paper_tables(PAPER.read_text())
    assert len(expected) == 2 * (5 * 3 - 1) - 3 + 8  # T1: 14 minus DenseNet ImageNet, T3: 11, T2+T4: 8
    recorded = {(c.table, c.row, c.dataset, round(c.accuracy, 2), c.source)
                for c in load_paper()["claims"] if c.table in ("table1", "table2")}
    assert recorded == expected


def test_cpu_tier_claims_are_the_analogous_rows_labelled_as_the_papers():
    claims = load_paper()["claims"]
    analogue = {"resnet20": "resnet110", "attn_resnet20_stage": "attn_resnet110",
                "se_resnet20": "se_resnet110", "cbam_resnet20": "cbam_resnet110"}
    official = {(c.row, c.accuracy, c.source) for c in claims
                if c.table in ("table1", "table2") and c.dataset == "cifar10"}
    cpu = [c for c in claims if c.table == "cpu_cifar10"]
    assert {c.row for c in cpu} == set(analogue)
    for c in cpu:
        assert (analogue[c.row], c.accuracy, c.source) in official, c
        assert "official CIFAR-10" in c.label and "200 ep" in c.label


def test_packaged_claims_show_beside_the_cells(tmp_path):
    md = generate([tmp_path], plot=False)
    rows = {r[0]: r for r in table_rows(md, "Tables 1 and 3")}
    assert rows["Attention ResNet-110 (paper)"][1].endswith("claim: 96.20 (Table 1) / 96.20 (Table 3)")
    assert "claims disagree: 95.20 (Table 1) vs 95.30 (Table 3)" in rows["SE-ResNet-110"][1]
    assert rows["CBAM-ResNet-110"][3].endswith("claim: 76.10 (Table 1)")  # no CBAM row in Table 3
    assert rows["ResNet-110"][2].endswith("claim: n/a")  # the JPEG copy: no claim of its own
    assert rows["Attention ResNet-50 (paper)"][4].endswith("claim: 78.30 (Table 1) / 78.30 (Table 3)")
    rows2 = {r[0]: r for r in table_rows(md, "Tables 2 and 4")}
    assert "claims disagree: 73.60 (Table 2) vs 74.30 (Table 4)" in rows2["ResNet-110"][3]
    cpu = {r[0]: r for r in table_rows(md, "CPU tier")}
    assert "claim (paper's CBAM-ResNet-110, 200 ep, official CIFAR-10): 95.50 (Table 1)" in cpu[
        "+ CBAM in every block"][1]
    assert "claim" not in cpu["+ the same, residual x(1 + w)"][1]  # no analogue in the paper


def test_a_claim_naming_no_cell_is_refused(tmp_path):
    bad = claims_file(tmp_path, [{"table": "table1", "row": "resnet110", "dataset": "imagenet",
                                  "metric": "top1_acc", "value": 75.3, "source": "Table 1"}])
    with pytest.raises(AttncnnError, match="no such cell"):
        load_paper(bad)


def test_a_baseline_that_is_not_a_row_is_refused(tmp_path):
    import yaml

    path = claims_file(tmp_path, [])
    doc = yaml.safe_load(path.read_text())
    doc["tables"][0]["baseline"] = "resnet18"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(AttncnnError, match="baseline 'resnet18'"):
        build_tables([], load_paper(path))


# ---------------------------------------------------------------- statistics
def test_t_quantiles_match_known_values():
    assert t975(1) == pytest.approx(12.706, abs=1e-3)
    assert t975(2) == pytest.approx(4.303, abs=1e-3)
    assert t975(4) == pytest.approx(2.776, abs=1e-3)
    assert t975(30) == pytest.approx(2.042, abs=1e-3)
    assert t975(60) == pytest.approx(2.000, abs=1e-3)   # past the table: the expansion
    assert t975(120) == pytest.approx(1.980, abs=1e-3)
    assert t975(10 ** 6) == pytest.approx(1.95996, abs=1e-4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            t975(bad)


def test_t_quantiles_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 201):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4)


def test_paired_difference_on_a_hand_made_example():
    row = {0: 11.0, 1: 22.0, 2: 33.0, 3: 50.0}   # seed 3 has no baseline: left out
    base = {0: 10.0, 1: 20.0, 2: 30.0, 9: 1.0}   # seed 9 has no row run: left out
    d = paired_difference(row, base)
    assert d.seeds == (0, 1, 2) and d.diffs == (1.0, 2.0, 3.0)
    assert d.mean == pytest.approx(2.0)
    assert d.half_width == pytest.approx(4.3027 * 1.0 / math.sqrt(3))  # sd of [1, 2, 3] is 1
    assert (d.low, d.high) == pytest.approx((2 - 2.48417, 2 + 2.48417), abs=1e-4)


def test_verdicts_in_plain_words():
    base = {0: 50.0, 1: 50.0, 2: 50.0}
    assert paired_difference({0: 52.0, 1: 52.1, 2: 51.9}, base).verdict == "wins"
    assert paired_difference({0: 48.0, 1: 47.9, 2: 48.1}, base).verdict == "loses"
    assert paired_difference({0: 51.0, 1: 52.0, 2: 53.0}, base).verdict == "within noise"
    one = paired_difference({0: 60.0}, base)
    assert (one.verdict, one.mean, one.half_width) == ("n<2: no interval", 10.0, None)
    assert paired_difference({5: 60.0}, base).verdict == "no seed in common"


def test_wall_time_mean_and_ratio():
    assert mean_minutes([60.0, 180.0, None]) == pytest.approx(2.0)  # a run without one is skipped
    assert mean_minutes([None]) is None
    assert time_ratio(6.0, 4.0) == pytest.approx(1.5)
    assert time_ratio(6.0, None) is None and time_ratio(None, 4.0) is None


def test_time_against_the_baseline_compares_runs_on_the_same_machine(tmp_path):
    cpu = dict(table="cpu_cifar10", dataset="cifar10_jpeg", epochs=24)
    slow, fast = "2-core CPU (AMD EPYC)", "2-core CPU (Intel Xeon)"
    for seed, (wall, machine) in enumerate([(4000.0, slow), (2000.0, fast), (1800.0, fast)]):
        write_result(tmp_path, model="resnet20_cifar", row="resnet20", seed=seed, top1=87.0,
                     wall=wall, device_name=machine, **cpu)
    # on the slow machine 3700 s against 4000 (0.925), on the fast one 2600 against 1900
    for seed, (wall, machine) in enumerate([(4400.0, slow), (2600.0, fast), (3000.0, slow)]):
        write_result(tmp_path, model="se_resnet20_cifar", row="se_resnet20", seed=seed,
                     top1=87.5, wall=wall, device_name=machine, **cpu)
    write_result(tmp_path, model="cbam_resnet20_cifar", row="cbam_resnet20", seed=2, top1=88.0,
                 wall=1000.0, device_name="NVIDIA H100", **cpu)  # no baseline run there
    out = tmp_path / "out"
    generate([tmp_path], out_dir=out, plot=False)
    rows = {r["row"]: r for r in csv.DictReader((out / "report.csv").open())
            if r["table"] == "cpu_cifar10"}
    assert float(rows["se_resnet20"]["time_ratio"]) == pytest.approx((0.925 + 2600 / 1900) / 2,
                                                               abs=1e-4)  # CSV: 4 decimals
    assert rows["cbam_resnet20"]["time_ratio"] == ""   # not 1000 s against the mean 2600 s
    assert float(rows["resnet20"]["time_ratio"]) == 1.0
    md = (out / "report.md").read_text()
    cbam = next(line for line in md.splitlines() if line.startswith("| + CBAM") and " min |" in line)
    assert cbam.endswith("| n/a |")


def test_machine_label_says_whether_the_cpu_computes_bf16_in_hardware():
    from attncnn.analysis.report_runs import machine

    name = "2-core CPU (AMD EPYC), 1 torch threads"
    assert machine({"device": "cpu", "device_name": name}) == f"cpu ({name})"  # older records
    assert machine({"device": "cpu", "device_name": name, "cpu_bf16": True}) == \
        f"cpu ({name}; bf16 in hardware)"
    assert machine({"device": "cpu", "device_name": name, "cpu_bf16": False}) == \
        f"cpu ({name}; no bf16 in hardware)"
    # a GPU run's record says nothing of the host CPU's bf16 in its label
    assert machine({"device": "cuda", "device_name": "NVIDIA H100", "cpu_bf16": False}) == \
        "cuda (NVIDIA H100)"
    assert machine({}) == "?"


def test_time_against_the_baseline_keeps_apart_cpus_of_one_name_with_and_without_bf16(tmp_path):
    cpu = dict(table="cpu_cifar10", dataset="cifar10_jpeg", epochs=24)
    epyc = "2-core CPU (AMD EPYC), 1 torch threads"
    with_bf16 = {"device": "cpu", "cpu_bf16": True}
    for seed in range(2):
        write_result(tmp_path, model="resnet20_cifar", row="resnet20", seed=seed, top1=87.0,
                     wall=400.0, device_name=epyc, env=with_bf16, **cpu)
    write_result(tmp_path, model="se_resnet20_cifar", row="se_resnet20", seed=0, top1=87.5,
                 wall=440.0, device_name=epyc, env=with_bf16, **cpu)
    write_result(tmp_path, model="se_resnet20_cifar", row="se_resnet20", seed=1, top1=87.5,
                 wall=4400.0, device_name=epyc, env={"device": "cpu", "cpu_bf16": False}, **cpu)
    out = tmp_path / "out"
    generate([tmp_path], out_dir=out, plot=False)
    rows = {r["row"]: r for r in csv.DictReader((out / "report.csv").open())
            if r["table"] == "cpu_cifar10"}
    # 440 s against 400 s on the bf16 EPYC; the AVX2 one's 4400 s has no baseline run there
    assert float(rows["se_resnet20"]["time_ratio"]) == pytest.approx(1.1, abs=1e-4)
    md = (out / "report.md").read_text()
    assert f"{epyc}; no bf16 in hardware" in md and f"{epyc}; bf16 in hardware" in md


def test_table_with_a_baseline_shows_paired_differences_and_time(tmp_path):
    cpu = dict(table="cpu_cifar10", dataset="cifar10_jpeg", epochs=24)
    for seed, acc in enumerate([80.0, 81.0, 82.0]):
        write_result(tmp_path, model="resnet20_cifar", row="resnet20", seed=seed, top1=acc,
                     wall=120.0, **cpu)
    for seed, acc in enumerate([81.0, 83.0, 85.0, 90.0]):  # seed 3: no baseline run to pair with
        write_result(tmp_path, model="se_resnet20_cifar", row="se_resnet20", seed=seed, top1=acc,
                     wall=180.0, **cpu)
    for seed, acc in enumerate([90.0, 91.1, 91.9]):
        write_result(tmp_path, model="cbam_resnet20_cifar", row="cbam_resnet20", seed=seed, top1=acc,
                     wall=240.0, **cpu)
    write_result(tmp_path, model="attn_resnet20_cifar", row="attn_resnet20_block", seed=0,
                 top1=79.0, wall=150.0, **{**cpu, "epochs": 10})  # another recipe: not paired
    out = tmp_path / "out"
    md = generate([tmp_path], out_dir=out, plot=False)
    section = md[md.index("### CPU tier"):md.index("### Short-budget")]
    assert "Seed by seed, against the baseline ResNet-20 (no attention):" in section
    lines = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines()
             if line.startswith("| ") and " min |" in line}
    base = lines["ResNet-20 (no attention) [S1]"]
    assert "80.00 (s0), 81.00 (s1), 82.00 (s2)" in base and "| baseline |" in base
    assert "2.0 min" in base and "1.00×" in base
    se = next(v for k, v in lines.items() if k.startswith("+ SE"))
    assert "| +2.00 (3 seeds) | [-0.48, +4.48] | within noise | 3.0 min | 1.50× |" in se
    cbam = next(v for k, v in lines.items() if k.startswith("+ CBAM"))
    assert "| +10.00 (3 seeds) |" in cbam and "| wins |" in cbam and "2.00×" in cbam
    block = next(v for k, v in lines.items() if k.startswith("+ softmax attention after every block"))
    assert "no baseline run at this setting" in block and "2.5 min" in block
    rows = {r["row"]: r for r in csv.DictReader((out / "report.csv").open()) if r["table"] == "cpu_cifar10"}
    se_csv = rows["se_resnet20"]
    assert (se_csv["paired_seeds"], se_csv["verdict"], se_csv["baseline"]) == (
        "0 1 2", "within noise", "resnet20")
    assert float(se_csv["diff_mean"]) == pytest.approx(2.0)
    assert float(se_csv["diff_ci95_high"]) - 2.0 == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    assert float(se_csv["time_ratio"]) == pytest.approx(1.5) and float(se_csv["wall_min_mean"]) == 3.0
    assert se_csv["top1_per_seed"] == "81.0000 83.0000 85.0000 90.0000"
    assert rows["resnet20"]["verdict"] == "baseline" and rows["resnet20"]["diff_mean"] == ""


def test_table_without_a_baseline_shows_seeds_and_time_only(tmp_path):
    write_result(tmp_path, seed=0, top1=70.0, wall=600.0)
    md = generate([tmp_path], plot=False)
    section = md[md.index("### Tables 1 and 3"):md.index("### Tables 2 and 4")]
    assert "Seed by seed, and wall time:" in section
    assert "| 70.00 (s0) | 10.0 min |" in section
    assert "Verdict" not in section and "vs baseline" not in section


def test_split_label_tells_a_held_out_val_split_from_a_folders_own():
    from attncnn.analysis.report_runs import split_label

    assert split_label({"eval_split": "val", "val_fraction": 0.1}) == "val (10% held out of train)"
    assert split_label({"eval_split": "val", "val_fraction": 0.0}) == "val"   # e.g. Imagenette's
    assert split_label({"eval_split": "test"}) == "test"


def test_wall_time_of_a_resumed_run_from_before_sessions_were_kept_is_a_lower_bound():
    from attncnn.analysis.report_runs import wall_time

    history = [{"epoch_time_s": 100.0}, {"epoch_time_s": 120.0}]
    assert wall_time({"wall_time_s": 250.0, "history": history}) == (250.0, False)
    assert wall_time({"wall_time_s": 130.0, "history": history}) == (220.0, True)  # resumed
    # records that keep every session's time are taken as they are
    assert wall_time({"wall_time_s": 130.0, "sessions": 2, "history": history}) == (130.0, False)
    assert wall_time({"history": history}) == (None, False)


def test_footnotes_give_the_published_weights_figure_where_it_differs(tmp_path):
    for seed, check in ((0, 90.21), (1, 90.0)):
        path = write_result(tmp_path, seed=seed)
        doc = json.loads(path.read_text())
        doc["published_check"] = {"top1": check, "split": "test", "run_top1": 90.0}
        path.write_text(json.dumps(doc))
    md = generate([tmp_path], plot=False)
    assert "the published weights re-check at 90.21 (s0, the run's 90.00)" in md
    assert "(s1, the run's" not in md   # a re-check that agrees is not repeated


def test_speed_against_accuracy_frontier_on_the_machine_with_most_timed_runs(tmp_path):
    """x: minutes on the table's most-used machine only; y: the table's figure over all
    seeds; a setting both slower and less accurate than another is off the frontier."""
    xeon, epyc = "2-core CPU (Intel Xeon), 1 torch threads", "2-core CPU (AMD EPYC), 1 torch threads"
    cpu_row(tmp_path, "resnet20_cifar", "resnet20", {0: 80.0, 1: 82.0}, wall=1200.0, device_name=xeon)
    cpu_row(tmp_path, "resnet20_cifar", "resnet20", {2: 84.0}, wall=6000.0, device_name=epyc)
    cpu_row(tmp_path, "se_resnet20_cifar", "se_resnet20", {0: 85.0, 1: 85.0}, wall=1800.0,
            device_name=xeon)
    cpu_row(tmp_path, "cbam_resnet20_cifar", "cbam_resnet20", {0: 81.0, 1: 81.0}, wall=3000.0,
            device_name=xeon)                                   # slower than SE and worse
    cpu_row(tmp_path, "attn_resnet20_cifar", "attn_resnet20_block", {0: 90.0}, wall=600.0,
            device_name=epyc)                                   # no run on the Xeon: no point
    from attncnn.analysis.report_frontier import frontiers

    runs, _ = load_runs([tmp_path])
    table = next(t for t in build_tables(runs, load_paper()) if t.id == "cpu_cifar10")
    (front,) = frontiers(table)
    assert "Intel Xeon" in front.machine
    points = {p.row: p for p in front.points}
    assert set(points) == {"resnet20", "se_resnet20", "cbam_resnet20"}
    assert points["resnet20"].minutes == pytest.approx(20.0) and points["resnet20"].timed == 2
    assert points["resnet20"].top1 == pytest.approx(82.0) and points["resnet20"].seeds == 3
    assert [p.row for p in front.best] == ["resnet20", "se_resnet20"]
    assert not points["cbam_resnet20"].on_frontier
    out = tmp_path / "out"
    md = generate([tmp_path], out_dir=out)
    line = next(x for x in md.splitlines() if x.startswith("Speed against accuracy (CIFAR-10"))
    assert "minutes per run on Intel Xeon" in line
    assert "ResNet-20 (no attention) [S1] 20.0 min (2 runs), 82.00%;" in line
    assert "the other setting is slower and no more accurate" in line
    with Image.open(out / "cpu_cifar10_frontier.png") as im:
        im.load()
        assert im.format == "PNG" and len(set(np.asarray(im.convert("L")).ravel().tolist())) > 2
    assert "](cpu_cifar10_frontier.png)" in md


def test_no_frontier_without_two_settings_timed_on_one_machine(tmp_path):
    cpu_row(tmp_path, "resnet20_cifar", "resnet20", {0: 80.0}, wall=1200.0,
            device_name="2-core CPU (Intel Xeon), 1 torch threads")
    cpu_row(tmp_path, "se_resnet20_cifar", "se_resnet20", {0: 85.0}, wall=1800.0,
            device_name="2-core CPU (AMD EPYC), 1 torch threads")
    out = tmp_path / "out"
    md = generate([tmp_path], out_dir=out)
    assert "Speed against accuracy" not in md
    assert not (out / "cpu_cifar10_frontier.png").exists()
