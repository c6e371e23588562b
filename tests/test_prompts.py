"""Soft prompts: parameter tree, attention/mask wiring, initialisers, attached/removed and
multi-task inference (tiny model, a few seconds)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trainer_fixtures as fixtures

from medmt5.decoding import sampling as decoding
from medmt5.model import protocols
from medmt5.model.transformer import Transformer
from medmt5.run import evaluation
from medmt5.training import optimizers, partitioning, train_state
from prompt_tuning import inference, initializers, prompts
from prompt_tuning.prompts import PromptedTransformer

P = 3
CFG = fixtures.tiny_config()


@pytest.fixture(scope="module")
def backbone_params():
    return fixtures.host_params(Transformer(CFG), seed=0)


@pytest.fixture(scope="module")
def prompt():
    return np.random.RandomState(1).uniform(-0.5, 0.5, (P, CFG.d_model)).astype(np.float32)


@pytest.fixture(scope="module")
def params(backbone_params, prompt):
    return dict(backbone_params, prompt={"embedding": prompt})


@pytest.fixture(scope="module")
def batch():
    return fixtures.make_batch(3, batch_size=4)


def test_param_tree_is_backbone_plus_prompt(backbone_params):
    model = PromptedTransformer(CFG, prompt_length=P)
    boxed = jax.eval_shape(lambda r: model.init(
        r, **{k: v[:1] for k, v in fixtures.make_batch(0).items()
              if k != "decoder_loss_weights"},
                                                enable_dropout=False), jax.random.PRNGKey(0))
    specs = nn.get_partition_spec(boxed)["params"]
    assert specs["prompt"]["embedding"] == jax.sharding.PartitionSpec("prompt_length",
                                                                      "prompt_embed")
    shapes = jax.tree.map(lambda x: x.shape, partitioning.unbox(boxed)["params"])
    assert shapes.pop("prompt") == {"embedding": (P, CFG.d_model)}
    assert shapes == jax.tree.map(lambda x: x.shape, backbone_params)
    # the prompt's logical axes are replicated by the rules a prompted model uses
    assert dict(partitioning.model_axis_rules(model))["prompt_length"] is None


def test_prompt_rules_are_the_prompt_packages_additions():
    """The core tables name no prompt axis; the prompt package adds its own, and those are
    what a prompted model gets (partitioning and Adafactor); without them: an error naming
    the axis."""
    core_names = [n for n, _ in partitioning.LOGICAL_AXIS_RULES] + list(optimizers.FACTOR_RULES)
    assert not [n for n in core_names if "prompt" in n]
    model = PromptedTransformer(CFG, prompt_length=P)
    assert isinstance(model, protocols.PromptedModel)
    assert isinstance(model, protocols.AddsLogicalAxes)
    assert not isinstance(Transformer(CFG), (protocols.PromptedModel, protocols.AddsLogicalAxes))
    assert partitioning.model_axis_rules(model) == (partitioning.LOGICAL_AXIS_RULES
                                                    + prompts.AXIS_RULES)
    assert partitioning.model_axis_rules(Transformer(CFG)) == partitioning.LOGICAL_AXIS_RULES
    assert optimizers.model_factor_rules(model) == {**optimizers.FACTOR_RULES,
                                                    **prompts.FACTOR_RULES}
    assert optimizers.model_factor_rules(Transformer(CFG)) == optimizers.FACTOR_RULES
    with pytest.raises(ValueError, match="'embed' already has a rule"):
        partitioning.standard_logical_axis_rules((("embed", "model"),))
    with pytest.raises(ValueError, match="'vocab' already in FACTOR_RULES"):
        optimizers.standard_factor_rules({"vocab": optimizers.ROW})

    boxed = jax.eval_shape(
        lambda r: train_state.init_boxed_params(model, fixtures.make_batch(0), r),
        jax.random.PRNGKey(0))
    specs = nn.get_partition_spec(boxed)
    mesh = fixtures.make_mesh((1, 1))
    with pytest.raises(ValueError, match=r"logical axis 'prompt_length' \(of \['prompt'\]"):
        partitioning.logical_to_shardings(specs, mesh)     # the core rules alone
    shardings = partitioning.logical_to_shardings(specs, mesh,
                                                  partitioning.model_axis_rules(model))
    assert shardings["prompt"]["embedding"].spec == jax.sharding.PartitionSpec(None, None)
    with pytest.raises(ValueError, match="Adafactor: logical axis 'prompt_length' of "
                                         r"\['prompt'\]\['embedding'\] has no factor rule"):
        jax.eval_shape(optimizers.adafactor(0.1).init, boxed)
    state = jax.eval_shape(optimizers.adafactor(
        0.1, factor_rules=optimizers.model_factor_rules(model)).init, boxed)
    assert state.moments["prompt"]["embedding"] is not None
    # the trainer's state builders take the model's rules by default
    placed = train_state.state_shardings(model, fixtures.make_optimizer(model),
                                         fixtures.make_batch(0), mesh)
    assert placed.params["prompt"]["embedding"].spec == jax.sharding.PartitionSpec(None, None)


def test_call_equals_explicit_prompt_composition(params, batch):
    """__call__ = backbone encode over [prompt; embed(tokens)] with mask 1 on the prompt
    (relative positions over P+T), decoder cross-attending to all P+T positions."""
    model = PromptedTransformer(CFG, prompt_length=P)
    inputs = {k: v for k, v in batch.items() if k != "decoder_loss_weights"}
    got = model.apply({"params": params}, **inputs, enable_dropout=False)
    want = inference.prompted_logits(CFG, params, batch)
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = Transformer(CFG).apply({"params": inference.split_prompt(params)[0]}, **inputs,
                                   enable_dropout=False)
    assert not np.allclose(got, plain, atol=1e-3)


def test_prompt_and_input_see_each_other_and_decoder_sees_prompt(params, batch):
    model = PromptedTransformer(CFG, prompt_length=P)
    tokens = jnp.asarray(batch["encoder_input_tokens"])

    def encode(p, toks):
        return model.apply({"params": dict(params, prompt={"embedding": p})}, toks,
                           enable_dropout=False, method=model.encode_prompted)

    enc, mask = encode(params["prompt"]["embedding"], tokens)
    assert enc.shape == (4, P + tokens.shape[1], CFG.d_model)
    np.testing.assert_array_equal(mask[:, :P], True)
    np.testing.assert_array_equal(mask[:, P:], tokens > 0)
    enc2, _ = encode(params["prompt"]["embedding"] + 1.0, tokens)  # input attends to prompt
    assert not np.allclose(enc[:, P:], enc2[:, P:], atol=1e-4)
    toks3 = tokens.at[:, 0].set(tokens[:, 0] % 50 + 60)             # prompt attends to input
    enc3, _ = encode(params["prompt"]["embedding"], toks3)
    assert not np.allclose(enc[:, :P], enc3[:, :P], atol=1e-4)
    # the decoder reads the prompt positions: hiding them from cross-attention changes logits
    def dec(m):
        return model.apply({"params": params}, enc, m, batch["decoder_input_tokens"],
                           enable_dropout=False, method=model.decode)

    assert not np.allclose(dec(mask), dec(mask.at[:, :P].set(False)), atol=1e-4)


def test_packing_is_refused(params, batch):
    model = PromptedTransformer(CFG, prompt_length=P)
    seg = np.ones_like(batch["encoder_input_tokens"])
    with pytest.raises(ValueError, match="packed"):
        model.apply({"params": params}, batch["encoder_input_tokens"],
                    batch["decoder_input_tokens"], encoder_segment_ids=seg,
                    decoder_segment_ids=np.ones_like(batch["decoder_input_tokens"]),
                    enable_dropout=False)


def test_hidden_states_give_the_same_logits(params, batch):
    model = PromptedTransformer(CFG, prompt_length=P)
    inputs = {k: v for k, v in batch.items() if k != "decoder_loss_weights"}
    hidden = model.apply({"params": params}, **inputs, enable_dropout=False,
                         method=model.hidden_states)
    logits = model.apply({"params": params}, hidden, method=model.logits_from_hidden)
    np.testing.assert_allclose(logits, model.apply({"params": params}, **inputs,
                                                   enable_dropout=False), atol=1e-5)


# ---- initialisers ----------------------------------------------------------------------

def test_uniform_initializer_range():
    x = np.asarray(initializers.uniform(0.5)(jax.random.PRNGKey(0), (100, 16)))
    assert x.shape == (100, 16) and np.abs(x).max() <= 0.5 and np.abs(x).max() > 0.45
    with pytest.raises(ValueError, match="scale"):
        initializers.uniform(0.0)


def test_embedding_initializers():
    emb = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    sampled = initializers.sampled_vocab(emb, 5, seed=0, vocab_limit=20)
    rows = [int(r[0]) // 4 for r in sampled]
    assert all(3 <= r < 20 for r in rows) and len(set(rows)) == 5
    np.testing.assert_array_equal(sampled, emb[rows])
    np.testing.assert_array_equal(sampled, initializers.sampled_vocab(emb, 5, 0, 20))
    labels = initializers.class_labels(emb, [[5, 7], [9]], 5)
    np.testing.assert_array_equal(labels[0], (emb[5] + emb[7]) / 2)
    np.testing.assert_array_equal(labels[1], emb[9])
    np.testing.assert_array_equal(labels[4], labels[0])
    text = initializers.text_tokens(emb, [4, 6, 8], 7)
    np.testing.assert_array_equal(text, emb[[4, 6, 8, 4, 6, 8, 4]])
    np.testing.assert_array_equal(initializers.text_tokens(emb, [4, 6, 8], 2), emb[[4, 6]])


def test_npy_initializer_and_shape_error(tmp_path, params, batch):
    path = tmp_path / "p.npy"
    np.save(path, params["prompt"]["embedding"])
    model = PromptedTransformer(CFG, prompt_length=P,
                                prompt_init=initializers.from_file(str(path)))
    inputs = {k: v[:1] for k, v in batch.items() if k != "decoder_loss_weights"}
    init = nn.unbox(model.init(jax.random.PRNGKey(0), **inputs, enable_dropout=False))
    np.testing.assert_array_equal(init["params"]["prompt"]["embedding"],
                                  params["prompt"]["embedding"])
    wrong = PromptedTransformer(CFG, prompt_length=P + 1,
                                prompt_init=initializers.from_file(str(path)))
    with pytest.raises(ValueError, match=r"p\.npy.*\(3, 16\).*\(4, 16\)"):
        wrong.init(jax.random.PRNGKey(0), **inputs, enable_dropout=False)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="bad.npy.*float \\[P, H\\]"):
        initializers.load_npy(str(tmp_path / "bad.npy"))
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        initializers.load_npy(str(tmp_path / "missing.npy"))


# ---- inference -------------------------------------------------------------------------

def test_removed_prompt_equals_plain_backbone_and_attached_differs(params, backbone_params,
                                                                   batch):
    plain, plain_scores = decoding.generate(Transformer(CFG), backbone_params, batch,
                                            max_decode_length=5)
    removed, removed_scores = inference.generate_promot(CFG, params, batch, mode="removed",
                                                        max_decode_length=5)
    np.testing.assert_array_equal(removed, plain)
    np.testing.assert_array_equal(removed_scores, plain_scores)
    attached, attached_scores = inference.generate_promot(CFG, params, batch,
                                                          max_decode_length=5)
    assert not np.allclose(attached_scores, plain_scores)
    # the evaluator decodes a PromptedTransformer with its prompt attached
    model = PromptedTransformer(CFG, prompt_length=P)
    seqs = evaluation.generate_tokens(model, params, batch["encoder_input_tokens"],
                                      max_decode_length=5)
    np.testing.assert_array_equal(seqs, attached)
    # greedy step-by-step output is the argmax of the teacher-forced prompted logits
    dec_in = np.concatenate([np.zeros((4, 1), np.int32), np.asarray(attached)[:, :-1]], 1)
    logits = inference.prompted_logits(CFG, params, {
        "encoder_input_tokens": batch["encoder_input_tokens"], "decoder_input_tokens": dec_in})
    first = np.asarray(jnp.argmax(logits[:, 0], -1))
    np.testing.assert_array_equal(first, np.asarray(attached)[:, 0])


def test_multitask_prompt_selection(params, batch):
    rs = np.random.RandomState(5)
    table = inference.stack_prompts([rs.uniform(-.5, .5, (P, CFG.d_model)).astype(np.float32)
                                     for _ in range(3)])
    task_ids = np.array([2, 0, 1, 2])
    mixed, mixed_scores = inference.generate_promot(CFG, params, batch, prompt=table,
                                                    task_ids=task_ids, max_decode_length=4)
    for t in range(3):
        one, one_scores = inference.generate_promot(CFG, params, batch, prompt=table[t],
                                                    max_decode_length=4)
        rows = task_ids == t
        np.testing.assert_array_equal(np.asarray(mixed)[rows], np.asarray(one)[rows])
        np.testing.assert_allclose(np.asarray(mixed_scores)[rows],
                                   np.asarray(one_scores)[rows], atol=1e-5)
    # the model's own table gathers the same rows
    model = PromptedTransformer(CFG, prompt_length=P, num_prompts=3)
    table_params = dict(params, prompt={"embedding": table})
    inputs = {k: v for k, v in batch.items() if k != "decoder_loss_weights"}
    got = model.apply({"params": table_params}, **inputs, task_ids=task_ids, enable_dropout=False)
    want = inference.prompted_logits(CFG, params, batch, prompt=table, task_ids=task_ids)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"task ids \[3\]"):
        inference.select_prompts(table, np.array([0, 3, 1, 1]))
    with pytest.raises(ValueError, match="task_ids"):
        inference.generate_promot(CFG, params, batch, prompt=table, max_decode_length=4)
    with pytest.raises(ValueError, match="same P and H"):
        inference.stack_prompts([table[0], table[0, :2]])
