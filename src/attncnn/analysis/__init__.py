"""Analysis of trained models and finished runs: `explain` (attention maps through the
models' hooks, Grad-CAM for models without spatial attention, localisation scores against
object boxes) with `explain_plot` (the PNG grids); `bench` (parameters, MACs, training and
inference throughput, peak memory); `publish` (a finished run's results file and a float16
weights file into the repository's results/); and `report` with `report_runs`,
`report_stats` and `report_render` (results files -> the paper's tables beside its claims
in `paper_claims.yaml`, with seed-paired differences, CSV and plots). These read run
directories, results files and weights files; none of them is needed to train or to use a
model.
"""
