import json

from attncnn.cli import main


def test_models_lists_counts_as_json(capsys):
    assert main(["models", "*resnet110_cifar", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = {r["name"] for r in rows}
    assert names == {"resnet110_cifar", "se_resnet110_cifar", "cbam_resnet110_cifar",
                     "attn_resnet110_cifar"}
    base = next(r for r in rows if r["name"] == "resnet110_cifar")
    assert 1.7e6 < base["params"] < 1.75e6
    assert 0.24e9 < base["macs"] < 0.26e9  # 253M MACs at 32x32 (He 2016: ~0.25G)


def test_models_unknown_pattern_is_one_line_error(capsys):
    assert main(["models", "no-such-model*"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attncnn: error:") and err.count("\n") == 1
