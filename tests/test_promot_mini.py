"""The rebuilt ProMoT miniature (experiments/promot_mini): vocabulary identity, episodes whose
answers only the context determines, the report generated from results.json, end to end."""
import json
import os

import numpy as np
import pytest

from experiments.promot_mini import episodes as E
from experiments.promot_mini import report
from experiments.promot_mini import words as W

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "experiments", "promot_mini")


def test_vocabulary_hash_is_stored_and_checked(tmp_path):
    with pytest.raises(ValueError, match="vocabulary.json is missing"):
        W.check_vocab(str(tmp_path))
    W.write_vocab(str(tmp_path))
    W.check_vocab(str(tmp_path))
    path = tmp_path / W.VOCAB_FILE
    stored = json.loads(path.read_text())
    stored["hash"] = W.vocab_hash(list(W.WORDS[:-1]))
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError) as e:
        W.check_vocab(str(tmp_path))
    assert stored["hash"] in str(e.value) and W.vocab_hash() in str(e.value)
    assert W.vocab_hash(list(W.WORDS[::-1])) != W.vocab_hash()   # order is identity


def test_words_roundtrip_and_unknown_word_is_an_error():
    ids = W.encode("cat = red ? true")
    assert W.decode(ids + [W.EOS, 5]) == "cat = red ? true"
    with pytest.raises(ValueError, match="not in the fixed vocabulary"):
        W.encode("cat = unicorn")
    assert W.vocab_size() >= len(W.WORDS) and W.vocab_size() % 8 == 0


def _parse(kind, x):
    """A rule-based solver: the answer from the context alone (the mapping is per episode)."""
    t = x.split()
    pm = t[1] if kind in ("recall", "labelmap", "copyfmt") else None
    if kind == "recall":
        pairs = {t[i]: t[i + 2] for i in range(0, len(t) - 3, 4)}
        return pairs[t[-2]]
    if kind == "labelmap":
        demos = [(t[i], t[i + 2]) for i in range(0, len(t) - 3, 4)]
        label = {W.CLASS_OF[w]: lab for w, lab in demos}
        return label[W.CLASS_OF[t[-2]]]
    if kind == "copyfmt":
        return f"{t[2]} {t[-2]}"
    if kind == "select":
        demos = [(t[i:i + 3], t[i + 4]) for i in range(0, len(t) - 5, 6)]
        cls = {W.CLASS_OF[a] for _, a in demos}
        assert len(cls) == 1
        (c,) = cls
        return next(w for w in t[-4:-1] if W.CLASS_OF[w] == c)
    if kind in ("verify", "verify_1shot"):
        pm = t[2]
        keys = [t[i] for i in range(1, 4 * E.NUM_PAIRS, 4)]
        assert t[-3] in keys and t[-2] == pm
        return "true" if W.CLASS_OF[t[-1]] == "animal" else "false"
    if kind == "isfood":
        assert t[0] == "classify" and len(t) == 3
        return "yes" if W.CLASS_OF[t[1]] == "food" else "no"
    raise AssertionError(kind, pm)


@pytest.mark.parametrize("kind", sorted(E.GENERATORS))
def test_answers_follow_from_the_context_and_fit(kind):
    rng = np.random.default_rng(3)
    answers = set()
    for _ in range(200):
        x, y = E.example(kind, rng)
        assert _parse(kind, x) == y, (x, y)
        answers.add(y)
        assert len(x.split()) <= E.ENC_LEN and len(y.split()) + 1 <= E.DEC_LEN
    assert len(answers) > 1, "a constant answer"
    b = E.batch(kind, np.random.default_rng(0), 4)
    assert b["inputs"].shape == (4, E.ENC_LEN) and b["targets"].shape == (4, E.DEC_LEN)
    np.testing.assert_array_equal(b["inputs"], E.batch(kind, np.random.default_rng(0), 4)["inputs"])


def test_mappings_and_markers_change_per_episode_and_formats_are_distinct():
    rng = np.random.default_rng(0)
    labels, markers = set(), set()
    for _ in range(100):
        x, y = E.example("labelmap", rng)
        labels.add(y)
        markers.add(x.split()[1])
        for fam in E.FAMILIES:
            _, a = E.example(fam, rng)
            assert not set(a.split()) & {w for f in W.TARGET_FORMATS.values() for w in f}
    assert len(labels) > 6 and markers == set(W.PAIR_MARKERS)
    x, _ = E.example("recall", np.random.default_rng(1), vary_markers=False)
    assert x.split()[1] == W.PAIR_MARKERS[0]


def test_mean_ci_and_gates():
    m, h = report.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 * 1.0 / np.sqrt(3), rel=1e-3)
    assert report.mean_ci([5.0]) == (5.0, 0.0)


def test_readme_table_is_generated_from_the_committed_results():
    with open(os.path.join(HERE, "results", "results.json")) as f:
        results = json.load(f)
    assert report.readme_table(os.path.join(HERE, "README.md")) == report.markdown(results)
    assert results["gates"] == report.gates(results)


def test_core_stages_use_the_recipes_freezing_settings_and_keep_best():
    """core.train's stages are the recipe's: the masks come from recipe.stage_freeze (stage 1:
    only the prompt moves; stage 2: the prompt stays bitwise, the backbone moves), the check
    gets the recipe's eval_beam_size, and keep-best keeps the first best step on
    recipe.KIND_METRICS' classification metric."""
    import jax

    from experiments.promot_mini import core
    from prompt_tuning import recipe

    model = core.build_model("none", 0.0, 0)
    example = core.to_batch(E.batch(E.FAMILIES, np.random.default_rng(0), 2))
    from medmt5.training import partitioning

    backbone = jax.device_get(partitioning.unbox(model.init(
        jax.random.PRNGKey(0), example["encoder_input_tokens"], example["decoder_input_tokens"],
        enable_dropout=False)["params"]))
    prompt = np.random.default_rng(1).uniform(-0.5, 0.5, (2, core.MODEL["d_model"]))
    calls = []

    def check(bb, pr, step, beam_size):
        calls.append((step, beam_size))
        return [50.0, 70.0, 70.0][len(calls) - 1], {}

    s1 = core.stage_settings(core.PROMPT_STAGE, 3, 1)
    assert (s1.learning_rate, s1.multiply_by_parameter_scale, s1.weight_decay_rate) == (
        recipe.PROMPT_STAGE.learning_rate, False, recipe.PROMPT_STAGE.weight_decay_rate)
    bb1, pr1, hist, _, best = core.train(backbone, s1, "train", ["verify"], 0, batch_size=4,
                                         prompt_length=2, prompt=prompt, check=check,
                                         log=lambda m: None)
    assert calls == [(1, recipe.PROMPT_STAGE.eval_beam_size), (2, 4), (3, 4)]
    assert best == 2 and [h["metric"] for h in hist] == [core.keep_best_metric()] * 3
    assert core.keep_best_metric() == "accuracy"
    for a, b in zip(jax.tree.leaves(backbone), jax.tree.leaves(bb1)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.asarray(pr1), prompt.astype(np.float32))
    s2 = core.stage_settings(core.MODEL_STAGE, 2, 2, learning_rate=1e-2)
    assert (s2.label_smoothing, s2.dropout_rate) == (recipe.MODEL_STAGE.label_smoothing,
                                                     recipe.MODEL_STAGE.dropout_rate)
    bb2, pr2, _, _, _ = core.train(bb1, s2, "frozen", ["verify"], 0, batch_size=4,
                                   prompt_length=2, prompt=pr1, check=None, log=lambda m: None)
    np.testing.assert_array_equal(np.asarray(pr2), np.asarray(pr1))
    assert any(not np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(bb1), jax.tree.leaves(bb2)))


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    from experiments.promot_mini import run

    out = tmp_path / "out"
    rc = run.main(["--smoke", "--out", str(out), "--seeds", "0", "--lrs", "1e-2"])
    with open(out / "results.json") as f:
        results = json.load(f)
    assert rc == (0 if all(g["passed"] for g in results["gates"].values()) else 1)
    methods = [r["method"] for r in results["rows"]]
    assert methods == ["pretrained", "prompt_tuning", "finetune", "promot"]
    for r in results["rows"]:
        h = r["heldout"]
        assert set(h["exact_match"]) == set(E.FAMILIES)
        assert 0 <= h["format_rate"] <= 100 and 0 <= h["norm_avg"] <= 100
    ft = results["rows"][2]
    assert [c["step"] for c in ft["curve"]] == [4, 8] and "format_rate" in ft["curve"][0]
    assert (out / "curves.png").stat().st_size > 1000
    assert results["pretrain"]["vocab_hash"] == W.vocab_hash()
    table = report.markdown(results)
    assert "| fine-tuning | 0.01 |" in table and "prompt tuning (stage 1), prompt attached" in table
    # the pretrained checkpoint is reused after its vocabulary is checked, and refused if not
    assert run.main(["--smoke", "--out", str(out), "--seeds", "0", "--lrs", "1e-2"]) == rc
    vocab = out / "pretrain" / W.VOCAB_FILE
    vocab.write_text(json.dumps({"hash": "0" * 64, "size": 3}))
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        run.main(["--smoke", "--out", str(out), "--seeds", "0"])
