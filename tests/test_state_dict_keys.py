"""State-dict names and shapes are frozen: published weights (results/weights/, the shipped
src/attncnn/pretrained/) must load into the models this code builds, unchanged.

tests/data/state_dict_keys.json was written once from the models as they were before the
shared-block refactor (`python tests/test_state_dict_keys.py --write`). It holds, per
configuration, the number of state-dict entries and the sha256 of the sorted
"name shape" lines. Configurations: every registered model with its defaults and every
attention model at every placement. Regenerate only to add a model; never to make a
changed name pass.

Every published weights file (results/weights/**, the shipped src/attncnn/pretrained/) is
checked directly: its tensors' names and shapes must be those of the model this code
builds from the file's own recipe, so a newly published run needs no new snapshot entry.
"""
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from attncnn.inference.weights import read_weights_metadata
from attncnn.models import ATTENTION_KINDS, create_model, list_models

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).with_name("data") / "state_dict_keys.json"
PUBLISHED = sorted(ROOT.glob("results/weights/**/*.safetensors")) + sorted(
    ROOT.glob("src/attncnn/pretrained/*.safetensors"))


def configurations() -> dict[str, tuple[str, dict]]:
    """{label: (model name, create_model arguments)}."""
    configs = {name: (name, {}) for name in list_models()}
    prefixes = tuple(kind.prefix for kind in ATTENTION_KINDS.values())
    for name in list_models():
        if name.startswith(prefixes):
            for placement in ("block", "stage", "end"):
                configs[f"{name}?attention_placement={placement}"] = (
                    name, {"attention_placement": placement})
    return configs


def name_shape_lines(name: str, args: dict) -> list[str]:
    with torch.device("meta"):
        state = create_model(name, **args).state_dict()
    return sorted(f"{k} {list(v.shape)}" for k, v in state.items())


def describe(name: str, args: dict) -> dict:
    lines = name_shape_lines(name, args)
    return {"count": len(lines),
            "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}


CONFIGS = configurations()


@pytest.fixture(scope="module")
def snapshot():
    return json.loads(SNAPSHOT.read_text())


@pytest.mark.parametrize("label", sorted(CONFIGS))
def test_state_dict_names_and_shapes_are_unchanged(label, snapshot):
    assert label in snapshot, f"{label} is not in {SNAPSHOT.name}: a new model?"
    name, args = CONFIGS[label]
    assert describe(name, args) == snapshot[label]


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_published_weights_have_the_names_and_shapes_this_code_builds(path):
    from safetensors import safe_open

    meta = read_weights_metadata(path)
    with safe_open(str(path), "pt") as f:
        stored = sorted(f"{k} {list(f.get_slice(k).get_shape())}" for k in f.keys())
    assert stored == name_shape_lines(meta["model"], meta["model_args"])


def test_every_registered_model_is_in_the_snapshot(snapshot):
    assert set(list_models()) <= set(snapshot)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps({k: describe(*v) for k, v in sorted(CONFIGS.items())},
                                   indent=1) + "\n")
    print(f"wrote {len(CONFIGS)} configurations to {SNAPSHOT}")
