"""benchmarks/time_to_accuracy.py (+ tta_ours.py, tta_airbench.py): the one-cycle schedule, the
ladder, the recipes and their overrides, airbench's options, the refusal of a missing GPU,
and, where airbench is installed, its CPU path. (Its step and optimiser are the engine's:
tests/test_engine_step.py; its batches come from DeviceLoader: tests/test_loader.py.)"""

import pytest
import torch

from benchmark_module import load_benchmark


def load_time_to_accuracy():
    return load_benchmark("time_to_accuracy")


def test_one_cycle_rises_to_one_then_falls_to_zero():
    f = load_time_to_accuracy().one_cycle(100, 0.2)
    values = [f(i) for i in range(101)]
    assert max(values) == 1.0 and values.index(1.0) == 19
    assert values[0] < values[10] < values[19] and values[100] == 0.0


def test_the_recipe_trains_with_the_engine_optimiser():
    from attncnn.engine.optim import build_optimizer

    recipe = load_time_to_accuracy().RECIPE
    group = build_optimizer(torch.nn.Linear(2, 2), recipe.optim()).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == \
        (0.4, 0.9, True, 5e-4)
    assert recipe.optim().label_smoothing == 0.2


def test_time_to_accuracy_ladder_stops_at_the_target_and_saves_every_try():
    ladder = load_time_to_accuracy().ladder
    accuracies = {10: 93.0, 12: 94.2, 16: 95.0}
    saved = []
    side = {}

    def run_one(epochs):
        return {"accuracy": accuracies[epochs], "time_s": float(epochs), "train_s": 0.0,
                "eval_s": 0.0}

    out = ladder("x", run_one, [10, 12, 16], 94.0, side, lambda: saved.append(len(side["tries"])))
    assert out["reached"] and out["epochs"] == 12 and out["time_to_target_s"] == 12.0
    assert saved == [1, 2] and len(out["tries"]) == 2  # 16 never ran

    def killed_on_second(epochs):  # a time limit ending the command during a try
        if epochs == 12:
            raise KeyboardInterrupt
        return run_one(epochs)

    side, saved = {}, []
    with pytest.raises(KeyboardInterrupt):
        ladder("x", killed_on_second, [10, 12], 94.0, side, lambda: saved.append(len(side["tries"])))
    assert saved == [1] and side["tries"][0]["accuracy"] == 93.0  # the finished try was kept


def test_time_to_accuracy_refuses_a_missing_gpu_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    module = load_time_to_accuracy()
    assert module.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "--device cpu" in err and err.count("\n") == 1


def test_ladder_records_when_each_try_ran_and_the_load_beside_it():
    side = {}
    load_time_to_accuracy().ladder("x", lambda e: {"accuracy": 50.0, "time_s": 1.0, "train_s": 1.0,
                                                   "eval_s": 0.0}, [1], 90.0, side, lambda: None)
    (tried,) = side["tries"]
    assert tried["started_at"].endswith("Z") and "loadavg_before" in tried and "loadavg_after" in tried


def test_the_cpu_recipe_and_its_overrides():
    from attncnn.engine.device import cpu_has_native_bf16

    module = load_time_to_accuracy()
    recipe = module.cpu_recipe()
    assert (recipe.model, recipe.model_args, recipe.batch_size, recipe.lr) == \
        ("attn_resnet9", {"width": 32}, 256, 0.2)
    assert recipe.amp == cpu_has_native_bf16() and not recipe.eval_amp and not recipe.compile
    assert recipe.channels_last and recipe.flip_tta and recipe.label_smoothing == 0.2
    changed = module.with_overrides(recipe, ["width=24", "batch_size=512", "lr=0.4",
                                             "attention_placement=block"])
    assert changed.model_args == {"width": 24, "attention_placement": "block"}
    assert (changed.batch_size, changed.lr) == (512, 0.4) and recipe.model_args == {"width": 32}
    with pytest.raises(SystemExit):
        module.with_overrides(recipe, ["width"])


def test_airbench_options_parse_and_refuse():
    module = load_time_to_accuracy()
    options = module.AirbenchOptions().with_overrides(
        ["lookahead=false", "whiten=no", "tta_level=1", "batch_size=512", "widths=[64, 128, 128]",
         "precision=fp32"])
    assert (options.lookahead, options.whiten, options.tta_level, options.batch_size,
            options.widths, options.precision) == (False, False, 1, 512, (64, 128, 128), "fp32")
    assert options.record(torch.device("cpu"))["precision"] == "fp32"
    for bad in (["lookahaed=false"], ["precision=fp16"], ["tta_level"]):
        with pytest.raises(SystemExit):
            module.AirbenchOptions().with_overrides(bad)
    with pytest.raises(SystemExit):  # a GPU runs airbench's own fp16
        options.record(torch.device("cuda"))


def test_airbench_trains_on_the_cpu_with_and_without_its_ingredients(tmp_path):
    """airbench's own train94 on a few 32x32 images on the CPU (narrow, as --smoke runs it):
    bf16 and fp32, and with lookahead, whitening and TTA switched off. Skips without airbench."""
    from attncnn.data.dataset import ArrayDataset

    module = load_time_to_accuracy()
    try:
        ab = module.import_airbench()
    except SystemExit:
        pytest.skip("airbench is not installed (pip install airbench)")
    from tta_airbench import _cpu_net

    gen = torch.Generator().manual_seed(0)

    def data(n):
        return ArrayDataset(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                            torch.arange(n) % 10, [str(c) for c in range(10)])

    module.write_airbench_files(data(64), data(20), tmp_path)
    for items in (["precision=bf16"], ["precision=fp32"],
                  ["lookahead=false", "whiten=false", "tta_level=0"]):
        options = module.AirbenchOptions().with_overrides(items)
        out = module.train_airbench(ab, 1.0, torch.device("cpu"), tmp_path, options, smoke=True)
        assert out["steps"] == 4 and 0 <= out["accuracy"] <= 100 and out["time_s"] >= out["train_s"] > 0
    # seeded: torch's generator (airbench's init, shuffling, augmentation) starts from the seed
    options = module.AirbenchOptions().with_overrides(["precision=fp32"])
    runs = [module.train_airbench(ab, 1.0, torch.device("cpu"), tmp_path, options, smoke=True,
                                  seed=7) for _ in range(2)]
    assert torch.initial_seed() == 7 and runs[0]["seed"] == 7
    assert runs[0]["accuracy"] == runs[1]["accuracy"]
    whitened = _cpu_net(ab, module.AirbenchOptions(), "fp32", smoke=True)
    plain = _cpu_net(ab, module.AirbenchOptions(whiten=False), "fp32", smoke=True)
    assert not whitened[0].weight.requires_grad and plain[0].weight.requires_grad
    assert {p.dtype for p in whitened.parameters()} == {torch.float32}


def test_ours_trains_and_evaluates_on_the_cpu():
    """Our side of the script end to end on a few 8x8 images: engine step, one-cycle, flip TTA."""
    from attncnn.data.dataset import ArrayDataset

    module = load_time_to_accuracy()
    gen = torch.Generator().manual_seed(0)

    def data(n):
        return ArrayDataset(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen),
                            torch.arange(n) % 4, ["a", "b", "c", "d"])

    recipe = module.Recipe(batch_size=8, amp=False, compile=False, channels_last=False,
                           crop_padding=1, eval_amp=False, model_args={"width": 2})
    ours = module.Ours(recipe, data(24), data(8), torch.device("cpu"))
    result = ours.train(epochs=2)
    assert result["steps"] == 6 and len(result["epoch_loss"]) == 2
    assert all(0 < loss < 10 for loss in result["epoch_loss"])
    assert 0 <= result["accuracy"] <= 100 and result["time_s"] >= result["train_s"] > 0
    again = ours.train(epochs=2)  # every run starts from the same initial weights
    assert again["epoch_loss"] == result["epoch_loss"]
    assert "accuracy_float32" not in result  # evaluated in float32 already


def test_a_bf16_evaluation_also_records_float32_accuracy_outside_the_clock(monkeypatch):
    """eval_amp: the timed evaluation runs under bf16 autocast; the same weights are then
    evaluated in float32 (not timed), so the two precisions' accuracies pair up."""
    from attncnn.data.dataset import ArrayDataset

    module = load_time_to_accuracy()
    gen = torch.Generator().manual_seed(0)
    data = [ArrayDataset(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen),
                         torch.arange(n) % 4, ["a", "b", "c", "d"]) for n in (24, 8)]
    recipe = module.Recipe(batch_size=8, amp=True, eval_amp=True, compile=False,
                           channels_last=False, crop_padding=1, model_args={"width": 2})
    ours = module.Ours(recipe, *data, torch.device("cpu"))
    seen = []
    evaluate = ours.evaluate
    monkeypatch.setattr(ours, "evaluate", lambda float32=False: (seen.append(float32),
                                                                 evaluate(float32))[1])
    result = ours.train(epochs=1)
    assert seen == [False, True] and ours.eval_dtype() == torch.bfloat16
    assert 0 <= result["accuracy_float32"] <= 100 and 0 <= result["accuracy"] <= 100


def test_one_cycle_can_start_and_end_above_zero():
    f = load_time_to_accuracy().one_cycle(100, 0.23, start=0.2, end=0.07)
    values = [f(i) for i in range(101)]
    assert values[0] == pytest.approx(0.2 + 0.8 / 23) and values[22] == 1.0
    assert values[100] == pytest.approx(0.07) and min(values) == pytest.approx(0.07)


def test_the_fastnet_recipe_states_airbench94s_hyperparameters_for_a_mean_loss():
    module = load_time_to_accuracy()
    recipe = module.fast_cpu_recipe()
    assert recipe.model == "attn_fastnet" and recipe.batch_size == 1024
    # airbench: lr 11.5 and decay 0.0153 per 1024 examples at momentum 0.85, summed loss
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    assert recipe.lr == pytest.approx(11.5 / kilostep * 1024)
    assert recipe.weight_decay == pytest.approx(0.0153 * 1024 / kilostep / (11.5 / kilostep) / 1024,
                                                rel=1e-3)
    assert (recipe.lookahead, recipe.whiten_images, recipe.whiten_bias_epochs,
            recipe.tta_translate, recipe.crop_padding) == (True, 5000, 3, 1, 2)
    from attncnn.engine.optim import build_optimizer
    from attncnn.models import create_model

    model = create_model(recipe.model, widths=[4, 8, 8])
    groups = build_optimizer(model, recipe.optim()).param_groups
    assert [g.get("lr_scale", 1.0) for g in groups] == [1.0, 64.0]


def test_ours_trains_the_fastnet_recipe_with_its_ingredients():
    """Whitened stem (frozen, the same in every run), lookahead, the stem bias frozen after
    its epochs, translation TTA: two runs from the same start give the same losses."""
    from attncnn.data.dataset import ArrayDataset

    module = load_time_to_accuracy()
    gen = torch.Generator().manual_seed(0)

    def data(n):
        return ArrayDataset(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8,
                                          generator=gen), torch.arange(n) % 4, list("abcd"))

    recipe = module.with_overrides(module.fast_cpu_recipe(), [
        "batch_size=8", "amp=false", "eval_amp=false", "whiten_images=16",
        "whiten_bias_epochs=1", "widths=[4,8,8]"])
    ours = module.Ours(recipe, data(24), data(8), torch.device("cpu"))
    stem = ours.model.stem[0]
    result = ours.train(epochs=2)
    assert result["steps"] == 6 and all(0 < loss < 10 for loss in result["epoch_loss"])
    whitened = stem.weight.clone()
    assert not stem.weight.requires_grad and not stem.bias.requires_grad   # after epoch 1
    again = ours.train(epochs=2)
    assert again["epoch_loss"] == result["epoch_loss"]
    assert torch.equal(stem.weight, whitened)
    plain = module.Ours(module.with_overrides(recipe, ["whiten_images=0"]), data(24), data(8),
                        torch.device("cpu"))
    plain.train(epochs=1)
    assert plain.model.stem[0].weight.requires_grad  # without whitening the stem trains
