"""Reads scalar curves back from TensorBoard event files and plots them to PNG (Agg)."""
from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence

import numpy as np


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """Returns {tag: [(step, value), ...]} sorted by step from the event files in `logdir`.

    Reads both tensor-style scalars (tensorboard.summary.Writer, tf.summary v2) and legacy
    `simple_value` scalars. A later value for the same (tag, step) wins (restarts).
    """
    # lazy: tensorboard's readers only for plots (training writes through progress.py)
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util  # lazy: as above

    files = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    curves: dict[str, dict[int, float]] = {}
    for path in files:
        for event in EventFileLoader(path).Load():
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField("tensor"):
                    arr = tensor_util.make_ndarray(value.tensor)
                    if arr.ndim != 0:
                        continue
                    scalar = float(arr)
                elif value.HasField("simple_value"):
                    scalar = float(value.simple_value)
                else:
                    continue
                curves.setdefault(value.tag, {})[int(event.step)] = scalar
    return {tag: sorted(points.items()) for tag, points in curves.items()}


def plot_curves(runs: Mapping[str, str], tags: Sequence[str], out_png: str,
                title: str = "") -> str:
    """Plots `tags` (one panel each) for every run {label: logdir} into `out_png`.

    Raises ValueError naming the tags when none of the runs has any of them, so an empty
    plot is never written silently.
    """
    import matplotlib  # lazy: matplotlib is heavy and only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after choosing the Agg backend

    data = {label: read_scalars(logdir) for label, logdir in runs.items()}
    present = [t for t in tags if any(t in d for d in data.values())]
    if not present:
        found = sorted({t for d in data.values() for t in d})
        raise ValueError(f"No scalars named {list(tags)} in {dict(runs)}; found: {found}")
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.6), squeeze=False)
    for ax, tag in zip(axes[0], present):
        for label, curves in data.items():
            if tag in curves:
                steps, values = zip(*curves[tag])
                ax.plot(np.asarray(steps), np.asarray(values), marker="." if len(steps) < 30
                        else None, label=label)
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
