"""`attncnn report`: results files -> tables with mean ± std, claims, CSV, README, plots."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attncnn.cli import main
from attncnn.errors import AttncnnError
from attncnn.report import (
    BEGIN,
    END,
    build_tables,
    generate,
    load_paper,
    load_runs,
    render_markdown,
    replace_readme_section,
)

JPEG = "CIFAR-10 (JPEG q75 copy)"


def write_result(folder: Path, *, model="attn_resnet110_cifar", table="table1", row="attn_resnet110",
                 dataset="cifar10_jpeg", seed=0, top1=90.0, epochs=4, data_name=JPEG,
                 completed=None, status="finished", history=True, name=None) -> Path:
    """A results file as `attncnn train` writes it (docs/results-format.md)."""
    completed = epochs if completed is None else completed
    doc = {
        "schema": "attncnn.result/1",
        "run_name": name or f"{model}-{dataset}-e{epochs}-s{seed}",
        "model": model,
        "model_args": {"depth": 110, "attention": "softmax", "attention_placement": "stage"},
        "data": {"source": "folder", "name": data_name, "train_split": "train",
                 "eval_split": "test", "num_train": 50000, "num_eval": 5000},
        "recipe": {"epochs": epochs, "batch_size": 128, "lr": 0.1, "schedule": "step"},
        "seed": seed,
        "tags": {} if table is None else {"table": table, "row": row, "dataset": dataset},
        "epochs_completed": completed,
        "status": status,
        "final": {"top1": top1},
        "history": [{"epoch": e + 1, "eval_top1": top1 * (e + 1) / completed}
                    for e in range(completed)] if history else [],
        "env": {"device": "cuda", "device_name": "NVIDIA H100", "git_commit": "0123456789abcdef",
                "git_dirty": False},
        "started_at": f"2026-11-25T15:{seed:02d}:00Z",
        "weights": f"runs/x/{model}-s{seed}/model.safetensors",
        "published_weights": f"results/weights/{model}-s{seed}.safetensors",
    }
    path = folder / f"{doc['run_name']}.json"
    path.write_text(json.dumps(doc))
    return path


def claims_file(tmp_path: Path, claims: list[dict]) -> Path:
    """The packaged layout with `claims` instead of the packaged (empty) list."""
    import yaml

    from attncnn import report

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
    md = generate([tmp_path], plot=False)
    rows = table_rows(md, "Tables 1 and 3")
    assert all("claim: n/a" in cell for r in rows for cell in r[1:] if cell != "—")
    assert "could not be retrieved" in md


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
