"""benchmarks/attention_content.py: how much a module's attention maps vary between images."""
import torch

from benchmark_module import load_benchmark


def test_one_map_for_every_image_is_told_from_image_dependent_maps():
    consistency = load_benchmark("attention_content").consistency
    fixed = torch.tensor([[2.0, 0.5], [1.0, 0.5]]).expand(10, 1, 2, 2)
    stats = consistency(fixed)
    assert stats["std_across_images"] == 0 and abs(stats["pairwise_cosine"] - 1) < 1e-6
    assert (stats["mean_min"], stats["mean_max"]) == (0.5, 2.0)
    # each image puts its weight on another position: the maps do not agree
    moving = torch.eye(4).mul(4).view(4, 1, 2, 2)
    stats = consistency(moving)
    assert stats["pairwise_cosine"] < 1e-6 and stats["std_across_images"] > 1
    assert stats["mean_map"] == [[1.0, 1.0], [1.0, 1.0]]


def test_it_reads_a_trained_models_maps_from_folder_data(tmp_path, capsys):
    from attncnn.inference.weights import save_weights
    from attncnn.models import create_model
    from test_data_crops import CLASSES, make_photos

    root = make_photos(tmp_path / "photos")
    torch.manual_seed(0)
    model = create_model("attn_resnet20_cifar", num_classes=2, depth=8, widths=[4, 8, 8])
    for module in model.modules():             # non-zero attention convs: maps vary
        if hasattr(module, "conv") and module.conv.out_channels == 1:
            torch.nn.init.normal_(module.conv.weight)
    weights = save_weights(tmp_path / "w.safetensors", model, classes=list(CLASSES.values()),
                           mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(3, 16, 16),
                           summary={"data_source": "folder", "data_input": {
                               "image_size": 20, "image_fit": "crop", "train_crop": "random_resized",
                               "crop_size": 16, "eval_crop_ratio": 0.875,
                               "class_names": dict(CLASSES)}})
    code = load_benchmark("attention_content").main([str(weights), "--data", "folder", "--root", str(root),
                                  "--split", "val", "--num", "6"])
    out = capsys.readouterr().out
    assert code == 0 and "16x16" in out and "pairwise cosine" in out
