"""State-dict names and shapes are frozen: published weights (results/weights/, the shipped
src/attncnn/pretrained/) must load into the models this code builds, unchanged.

tests/data/state_dict_keys.json was written once from the models as they were before the
shared-block refactor (`python tests/test_state_dict_keys.py --write`). It holds, per
configuration, the number of state-dict entries and the sha256 of the sorted
"name shape" lines. Configurations: every registered model with its defaults, every
attention model at every placement, and the model of every published weights file.
Regenerate only to add a model; never to make a changed name pass.
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
PUBLISHED = sorted(ROOT.glob("results/weights/*.safetensors")) + sorted(
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
    for path in PUBLISHED:
        meta = read_weights_metadata(path)
        configs[f"file:{path.relative_to(ROOT).as_posix()}"] = (meta["model"], meta["model_args"])
    return configs


def describe(name: str, args: dict) -> dict:
    with torch.device("meta"):
        state = create_model(name, **args).state_dict()
    lines = sorted(f"{k} {list(v.shape)}" for k, v in state.items())
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


def test_every_registered_model_is_in_the_snapshot(snapshot):
    assert set(list_models()) <= set(snapshot)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps({k: describe(*v) for k, v in sorted(CONFIGS.items())},
                                   indent=1) + "\n")
    print(f"wrote {len(CONFIGS)} configurations to {SNAPSHOT}")
