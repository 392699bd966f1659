"""The `attncnn` commands, one module each (`attncnn.cli` lists them in COMMANDS): every
module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`, parses and checks
its arguments, and calls the package that does the work (engine for train and sweep,
inference for eval, predict and export, analysis for explain, bench, publish and report,
models and pretrained for their listings). Heavy imports happen inside `run`, so
`attncnn --help` stays quick, and errors reach the user as one `AttncnnError` line.
"""
