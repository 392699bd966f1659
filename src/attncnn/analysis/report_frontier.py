"""Speed against accuracy: each table's settings as points (minutes per run, top-1).

Wall times only compare on one machine (`report_runs.machine`: runs of one table come from
CPUs that differ several-fold), so for each data set of a table the frontier is drawn on
the machine with the most finished, wholly timed runs there: a setting's x is the mean wall
time of its runs on that machine, its y the mean top-1 over all its finished seeds (the
figure in the table). A setting is on the frontier when no other is at least as fast and at
least as accurate, and better in one. `report_render` draws and describes them.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attncnn.analysis.report import Group, Table


@dataclass
class FrontierPoint:
    row: str
    row_label: str
    group: str          # the setting's footnote key, e.g. "S2"
    minutes: float      # mean wall time of its runs on the frontier's machine
    timed: int          # how many runs that mean is over
    top1: float         # mean top-1 over all its finished seeds
    std: float | None
    seeds: int
    on_frontier: bool = False


@dataclass
class Frontier:
    dataset: str
    dataset_label: str
    machine: str        # report_runs.machine label
    points: list[FrontierPoint]

    @property
    def best(self) -> list[FrontierPoint]:
        """The points on the frontier, fastest first."""
        return sorted((p for p in self.points if p.on_frontier), key=lambda p: p.minutes)


def _timed(g: Group):
    """Finished runs with a whole wall time (not a lower bound)."""
    return [r for r in g.done if isinstance(r.wall_time_s, (int, float))
            and not isinstance(r.wall_time_s, bool) and r.wall_time_s > 0 and not r.wall_time_floor]


def frontiers(table: Table) -> list[Frontier]:
    """One Frontier per data set of `table` with at least two settings timed on one machine."""
    labels = dict(table.rows)
    out = []
    for ds, ds_label in table.datasets:
        groups = [(row, g) for row, _ in table.rows for g in table.cells[row, ds].groups]
        machines = Counter(r.device for _, g in groups for r in _timed(g))
        if not machines:
            continue
        machine = machines.most_common(1)[0][0]   # ties: the first seen
        points = []
        for row, g in groups:
            there = [float(r.wall_time_s) for r in _timed(g) if r.device == machine]
            if there and g.mean is not None:
                points.append(FrontierPoint(row, labels[row], g.label,
                                            statistics.fmean(there) / 60.0, len(there),
                                            g.mean, g.std, g.n))
        if len(points) < 2:
            continue
        for p in points:
            p.on_frontier = not any(
                q is not p and q.minutes <= p.minutes and q.top1 >= p.top1
                and (q.minutes < p.minutes or q.top1 > p.top1) for q in points)
        out.append(Frontier(ds, ds_label, machine, points))
    return out
