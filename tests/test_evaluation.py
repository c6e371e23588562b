"""medmt5.run.evaluation: decode -> postprocess -> metrics plumbing, scoring, best checkpoint."""
import json

import jax
import numpy as np
import pytest

pytest.importorskip("seqio")

from medmt5.model.config import T5Config  # noqa: E402
from medmt5.model.transformer import Transformer  # noqa: E402
from medmt5.run import evaluation  # noqa: E402

TASK = "abstrct_neoplasm_en"  # shipped sample: 12 validation sentences, labels Claim/Premise
LENGTHS = {"inputs": 96, "targets": 128}


@pytest.fixture(scope="module")
def tiny():
    import tasks.benchmarks  # noqa: F401  (registers the benchmark tasks)

    cfg = T5Config(vocab_size=2176, d_model=32, d_kv=8, d_ff=64, num_heads=2,
                   num_encoder_layers=1, num_decoder_layers=1)
    model = Transformer(cfg)
    ones = np.ones((1, 8), np.int32)
    params = model.init(jax.random.key(0), ones, ones, ones, enable_dropout=False)["params"]
    params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                          is_leaf=lambda x: hasattr(x, "value"))
    return model, params


class OracleDecoder:
    """Returns each example's gold target tokens (or its untagged input) as the decode."""

    def __init__(self, td, copy_input=False):
        key = "inputs" if copy_input else "targets"
        self.table = {tuple(int(t) for t in e["inputs"]): [int(t) for t in e[key]]
                      for e in td.examples}
        self.constraints = []

    def __call__(self, model, params, encoder_input_tokens, *, max_decode_length, beam_size,
                 constraint):
        self.constraints.append(constraint)
        rows = np.asarray(jax.device_get(encoder_input_tokens))
        out = np.zeros((rows.shape[0], max_decode_length), np.int32)
        for i, row in enumerate(rows):
            toks = self.table.get(tuple(int(t) for t in row[row > 0]), [1])
            out[i, :len(toks)] = toks[:max_decode_length]
        return out


def _evaluator(**kw):
    return evaluation.Evaluator([TASK], LENGTHS, split="validation", batch_size=8, **kw)


def test_oracle_predictions_score_f1_100_and_constraint_is_built(tiny):
    model, params = tiny
    ev = _evaluator()
    td = ev.data[0]
    assert td.labels == ("Claim", "Premise") and len(td.examples) == 12
    oracle = OracleDecoder(td)
    ev.decode_fn = oracle
    metrics, records = ev.evaluate_task(model, params, td)
    assert metrics["f1"] == pytest.approx(100.0)
    assert len(records) == 12 and records[0]["prediction"] == records[0]["target"]
    assert "<Claim>" in "".join(r["target"] for r in records)
    # two padded batches of 8, each decoded under a sequence-labelling constraint
    assert len(oracle.constraints) == 2 and all(c is not None for c in oracle.constraints)
    # teacher-forced scores of an untrained model: finite loss near log(vocab)
    assert 0.5 * np.log(2176) < metrics["loss"] < 2 * np.log(2176)


def test_untagged_copy_scores_zero_and_metrics_are_logged(tiny, tmp_path):
    model, params = tiny
    ev = _evaluator(summary_dir=str(tmp_path))
    ev.decode_fn = OracleDecoder(ev.data[0], copy_input=True)
    out = ev.evaluate(model, params, step=7)
    assert out[f"{TASK}/f1"] == 0.0 and f"{TASK}/loss" in out
    from medmt5.run.plotting import read_scalars
    scalars = read_scalars(str(tmp_path / TASK))
    assert scalars["f1"] == [(7, 0.0)]


def test_aggregate_and_best_keeper(tiny, tmp_path):
    import medmt5

    model, params = tiny
    m = {"a/f1": 40.0, "b/f1": 60.0, "a/loss": 2.0}
    assert evaluation.aggregate(m, "f1") == 50.0
    assert evaluation.aggregate(m, "a/f1") == 40.0
    assert evaluation.aggregate(m, "rougeL") is None

    keeper = evaluation.BestCheckpointKeeper(str(tmp_path), "f1")
    assert keeper.update(10, {"x/f1": 30.0}, model.config, params)
    assert not keeper.update(20, {"x/f1": 20.0}, model.config, params)
    bumped = jax.tree.map(lambda x: x + 1.0, params)
    assert keeper.update(30, {"x/f1": 35.0}, model.config, bumped)
    assert json.load(open(tmp_path / "best" / "best.json")) == {
        "step": 30, "metric": "f1", "value": 35.0}
    cfg, loaded = medmt5.load_checkpoint(str(tmp_path / "best"))
    np.testing.assert_allclose(loaded["token_embedder"]["embedding"],
                               np.asarray(bumped["token_embedder"]["embedding"]))
    # a restarted run continues from the recorded best; loss metrics are minimised
    assert evaluation.BestCheckpointKeeper(str(tmp_path), "f1").best["step"] == 30
    loss_keeper = evaluation.BestCheckpointKeeper(str(tmp_path / "l"), "loss")
    assert loss_keeper.update(1, {"x/loss": 3.0}, model.config, params)
    assert loss_keeper.update(2, {"x/loss": 2.0}, model.config, params)
    with pytest.raises(ValueError, match="best_metric 'f1' is not among"):
        keeper.update(40, {"x/loss": 1.0}, model.config, params)


def test_default_eval_tasks_of_a_mixture():
    import tasks.benchmarks  # noqa: F401

    assert evaluation.default_eval_tasks(TASK, "validation") == [TASK]
    members = evaluation.default_eval_tasks("abstrct_en_eval", "test")
    assert sorted(members) == ["abstrct_glaucoma_en", "abstrct_mixed_en", "abstrct_neoplasm_en"]
    assert evaluation.default_eval_tasks("abstrct_en_eval", "validation") == [
        "abstrct_neoplasm_en"]
