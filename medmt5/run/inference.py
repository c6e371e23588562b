"""Predictions of a checkpoint as JSONL: the work behind `python -m medmt5.infer` (gin's
`infer`); medmt5/cli/infer.py only parses the flags.

Inputs come from the task's split, or from a file of model inputs (`read_inputs`).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import jax

import medmt5
from medmt5.data import paths, vocab_record  # paths: INPUT_FILE / OUTPUT_FILE may be gs://
from medmt5.model.transformer import Transformer
from medmt5.run import evaluation
from medmt5.training import partitioning

log = logging.getLogger(__name__)


def read_inputs(path: str) -> list[str]:
    """Model inputs from a text file (one per line) or JSONL ({"inputs": ...} per line)."""
    texts = []
    with paths.open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    texts.append(str(json.loads(line)["inputs"]))
                except (json.JSONDecodeError, KeyError) as e:
                    raise ValueError(f"{path}:{lineno}: expected a JSON object with an "
                                     f"'inputs' field ({e})") from None
            else:
                texts.append(line)
    if not texts:
        raise ValueError(f"{path}: no inputs (empty file)")
    return texts


def infer(*, checkpoint_path: str, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], output_file: str, split: str = "test",
          input_file: str | None = None, batch_size: int = 8,
          max_examples: int | None = None, beam_size: int = 1,
          max_decode_length: int | None = None, num_partitions: int = 1,
          allow_vocabulary_change: bool = False) -> list[dict]:
    """Predicts every example and writes JSONL to output_file; returns the records."""
    cfg, params = medmt5.load_checkpoint(checkpoint_path)
    vocab_record.check_scoring_run(checkpoint_path, [mixture_or_task_name], cfg.vocab_size,
                                   allow_vocabulary_change)
    model = Transformer(cfg)
    mesh = partitioning.create_mesh(num_partitions=num_partitions)
    params = evaluation.place_params(model, params, mesh, task_feature_lengths)
    evaluator = evaluation.Evaluator([], task_feature_lengths, split=split, mesh=mesh,
                                     batch_size=batch_size, beam_size=beam_size,
                                     max_decode_length=max_decode_length, lazy=True)
    if input_file:
        td = evaluation.TaskData.from_texts(mixture_or_task_name, read_inputs(input_file),
                                            task_feature_lengths)
    else:
        td = evaluation.TaskData(mixture_or_task_name, task_feature_lengths, split,
                                 max_examples)
    predictions = evaluator.predict(model, params, td)
    records = [{"inputs": i, "prediction": p, "target": t}
               for i, p, t in zip(td.inputs_text, predictions, td.targets_text)]
    if jax.process_index() == 0:
        paths.makedirs(paths.dirname(paths.normalize(output_file)))
        with paths.open(output_file, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    log.info("wrote %d predictions to %s", len(records), output_file)
    return records
