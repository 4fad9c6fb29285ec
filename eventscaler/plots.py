"""Plots of simulated runs (`simulate --plot`, `make compare`): matplotlib, a tooling dependency the
daemon never imports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventscaler.config import Rule
from eventscaler.keda_model import MODEL_LABEL
from eventscaler.scenarios import Load
from eventscaler.simulate import NO_POLL_LABEL, RATE_AWARE_LABEL, Run, WorkerModel

COLORS = {
    "ours": "#1f6fb4",
    MODEL_LABEL: "#d1495b",
    NO_POLL_LABEL: "#8a8a8a",
    RATE_AWARE_LABEL: "#2a9d5c",
}
CAPTION = f"{MODEL_LABEL}: built from KEDA's documented semantics, not KEDA itself"
LEGEND = {
    MODEL_LABEL: f"{MODEL_LABEL} (from documented semantics, not KEDA itself)",
    NO_POLL_LABEL: "no-poll (the rule's arithmetic without polling delay or cooldown)",
}


def plot_runs(
    runs: Sequence[Run], load: Load, rule: Rule, workers: WorkerModel, path: str | Path
) -> None:
    """Backlog (top) and replicas (bottom) over time, one line per run, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(8.0, 5.4), dpi=90, height_ratios=(3, 2), layout="constrained"
    )
    # The story is in the writes: stop a little after the last one rather than show a flat tail.
    last_write = max((w.time for run in runs for w in run.writes), default=load.duration)
    right = min(load.duration, max(last_write * 1.08 + 20.0, 60.0))
    for run in runs:
        _draw(run, top, bottom)
    top.set_ylabel("backlog (messages)")
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("time (s)")
    bottom.set_ylim(bottom=0, top=rule.max_replicas * 1.12 + 0.5)
    top.set_ylim(bottom=0)
    top.set_xlim(0, right)
    for axes in (top, bottom):
        axes.grid(True, color="#e4e4e4", lw=0.8)
        axes.spines[["top", "right"]].set_visible(False)
    top.legend(loc="best", frameon=False, fontsize=9)
    top.set_title(f"{load.name}: {load.description}", fontsize=10, loc="left")
    bottom.set_title(
        f"rule {rule.name}: {rule.min_replicas}..{rule.max_replicas} replicas, "
        f"{rule.triggers[0].target:g} messages/replica, poll every "
        f"{rule.polling_interval:g}s, cooldown {rule.cooldown_period:g}s;  workers: "
        f"{workers.processing_rate:g} msg/s each, ready after {workers.startup_seconds:g}s",
        fontsize=8,
        loc="left",
        color="#555555",
    )
    figure.savefig(path)
    plt.close(figure)


def _draw(run: Run, top: Any, bottom: Any) -> None:
    """One run: its backlog on the top axes, its replicas on the bottom ones."""
    color = COLORS.get(run.label)
    width = 1.2 if run.label == NO_POLL_LABEL else 2.0
    style = ":" if run.label == NO_POLL_LABEL else "-"
    times = [s.time for s in run.samples]
    label = LEGEND.get(run.label, run.label)
    top.plot(times, [s.backlog for s in run.samples], style, color=color, lw=width, label=label)
    bottom.step(
        times, [s.replicas for s in run.samples], style, where="post", color=color, lw=width
    )
