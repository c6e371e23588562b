"""Keeping the best evaluated step: MODEL_DIR/best holds the params of the step whose eval
metric (`aggregate`d over tasks) is best so far, as a loadable model directory.
Re-exported by medmt5.run.evaluation.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from medmt5.checkpointing.checkpoint_io import save_params_checkpoint
from medmt5.data import paths
from medmt5.model.transformer import unscan_params

log = logging.getLogger(__name__)


def aggregate(metrics: Mapping[str, float], name: str) -> float | None:
    """`name` if present ("task/f1"), else the mean of "<task>/<name>" over tasks."""
    if name in metrics:
        return metrics[name]
    values = [v for k, v in metrics.items() if k.rsplit("/", 1)[-1] == name]
    return float(np.mean(values)) if values else None


class BestCheckpointKeeper:
    """Keeps the params of the best eval step in MODEL_DIR/best (a loadable model dir).

    Higher is better unless the metric name contains "loss". MODEL_DIR/best/best.json records
    {"step", "metric", "value"}; the params are our checkpoint layout (model_config.json +
    orbax step), so `medmt5.load_checkpoint(MODEL_DIR + "/best")` and `medmt5.eval` read it.
    """

    def __init__(self, model_dir: str, metric: str):
        self.dir = paths.join(model_dir, "best")
        self.metric = metric
        self.lower_is_better = "loss" in metric
        self.best = None
        path = paths.join(self.dir, "best.json")
        if paths.exists(path):
            self.best = json.loads(paths.read_text(path))

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best["value"] if self.lower_is_better else value > self.best["value"]

    def update(self, step: int, metrics: Mapping[str, float], cfg, params) -> bool:
        """Saves `params` (the model's tree, scanned iff cfg.scan_layers) if `metrics` beat
        the best so far; returns whether they did."""
        value = aggregate(metrics, self.metric)
        if value is None:
            raise ValueError(f"best_metric {self.metric!r} is not among the eval metrics "
                             f"{sorted(metrics)}; set EvalConfig.best_metric to one of them")
        if not math.isfinite(value) or not self.is_better(value):
            return False

        host = host_params(params)
        if cfg.scan_layers:
            host = unscan_params(host)
        if jax.process_index() == 0:
            save_params_checkpoint(cfg.replace(scan_layers=False), host, self.dir, step=step,
                                   overwrite=True)
            self.best = {"step": int(step), "metric": self.metric, "value": float(value)}
            paths.write_text(paths.join(self.dir, "best.json"), json.dumps(self.best))
        self.best = {"step": int(step), "metric": self.metric, "value": float(value)}
        log.info("new best %s=%.4f at step %d -> %s", self.metric, value, step, self.dir)
        return True


def host_params(params: Any) -> Any:
    """Params as host numpy arrays (gathered across processes when sharded over hosts)."""
    def get(x):
        if getattr(x, "is_fully_addressable", True):
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(get, params)
