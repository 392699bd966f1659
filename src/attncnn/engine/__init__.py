"""The training engine: from a config to a run directory. `config` (with `config_yaml`
for YAML files and --set overrides) reads and checks every section (each one validates
itself; `model.args` are checked by building the model on the meta device before any data
loads); `train` runs it: `device` and `distributed` pick the devices and join torchrun's
process group, `optim` builds the optimiser and schedule, `step` is the one training step,
`loop` the epoch with its stops, `metrics` the evaluation, `logger` the per-epoch lines,
`checkpoint` the atomic, exactly resumable checkpoints, and `run_dir` and `results` the
files a run leaves (config.yaml, model.safetensors, results.json). `sweep` trains many
configs x seeds across sessions. Data comes from `attncnn.data`, models from
`attncnn.models`; the weights file format belongs to `attncnn.inference.weights`.
"""
