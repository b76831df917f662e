"""Text encoders on token ids: random BERT-like specs are the same function in numpy, torch and Keras (forward,
gradients, training); Hugging Face's BERT and DistilBERT and a hand-written Keras encoder port both ways,
float32 and float64; an embedding that looks up the wrong rows, or trains its padding row, is caught."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xconv as xc
from xconv.errors import PortError, SpecError, UnsupportedLayerError, XconvError
from xconv.testing import TOLERANCE, assert_equivalent, max_rel_diff, strategies, train_parity

from .zoo_support import import_torchvision

#: BERT's shape, small: word, position and token-type embeddings, a LayerNorm, one post-norm block whose
#: attention has its output projection as a Linear of its own, then the pooler (first token, Linear, tanh)
BERT = xc.Sequential(
    xc.Embedding(20, 8, padding_idx=0),
    xc.PositionEmbedding(5, 8, rows=7),
    xc.TokenTypeEmbedding(2, 8),
    xc.LayerNorm(8),
    xc.Add(xc.Identity(), xc.Sequential(xc.SelfAttention(8, 2, projection=False), xc.Linear(8, 8))),
    xc.LayerNorm(8),
    xc.Add(xc.Identity(), xc.Sequential(xc.Linear(8, 12), xc.GELU(), xc.Linear(12, 8))),
    xc.LayerNorm(8),
    xc.SelectToken(0),
    xc.Linear(8, 8),
    xc.Tanh(),
    xc.Linear(8, 3),
    input_shape=(5,),
)


def _ids(n: int = 3, length: int = 5, vocabulary: int = 20, seed: int = 1) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(0, vocabulary, (n, length))
    ids[0, -2:] = 0  # padding at the end of the first sequence
    return ids


@st.composite
def cases(draw, batch_stats: bool = True):
    spec = draw(strategies.text_encoder_specs(batch_stats=batch_stats))
    ids = draw(strategies.inputs(spec))
    side = {
        "padding_mask": draw(strategies.padding_masks(spec, ids)),
        "token_types": draw(strategies.token_types(spec, ids)),
    }
    return spec, draw(strategies.weights(spec)), ids, side


@settings(max_examples=15)
@given(case=cases())
def test_random_text_encoders_are_the_same_function_in_every_backend_float64(both_backends, case):
    spec, weights, ids, side = case
    assert_equivalent(spec, weights, ids, **side)


@settings(max_examples=15)
@given(case=cases(batch_stats=False))
def test_random_text_encoders_are_the_same_function_in_every_backend_float32(both_backends, case):
    spec, weights, ids, side = case
    assert_equivalent(spec, weights, ids, dtype="float32", **side)


def test_a_small_bert_trains_the_same_in_both_frameworks(both_backends):
    """Token ids, labels and SGD in float64: the padding row of the word embeddings is not updated in either
    framework (torch's padding_idx; in Keras its gradient is stopped)."""
    r = train_parity(BERT, steps=10, dtype="float64")
    assert r.torch_losses[-1] < r.torch_losses[0]  # it trained
    assert r.max_param_diff <= 1e-9, r.param_diffs
    assert r.max_loss_diff <= 1e-9
    start = r.initial_weights["0.weight"]
    for backend in ("torch", "tf"):
        table = r.final_weights[backend]["0.weight"]
        assert np.array_equal(table[0], start[0])  # the padding row
        assert np.abs(table[1:] - start[1:]).max() > 1e-4  # the others trained


def test_a_small_bert_trains_the_same_with_adam(both_backends):
    """Adam squares the gradient: Keras' own Embedding gives its optimizer one slice per token, squared before
    they are summed where an id repeats in a batch; xconv's Keras embedding gives the summed gradient, as
    torch does."""
    r = train_parity(BERT, steps=10, dtype="float64", optimizer="adam", lr=1e-3)
    assert r.torch_losses[-1] < r.torch_losses[0]
    assert r.max_param_diff <= 1e-9, r.param_diffs


def test_adam_parity_catches_keras_own_embedding(both_backends, monkeypatch):
    import keras

    from xconv.kinds.token import _keras as token_keras

    def native(input_dim, output_dim, padding_idx=None, **kwargs):
        return keras.layers.Embedding(input_dim, output_dim, **kwargs)

    monkeypatch.setattr(token_keras, "TokenEmbedding", native)
    r = train_parity(BERT, steps=10, dtype="float64", optimizer="adam", lr=1e-3)
    assert r.param_diffs["0.weight"] > 1e-4, r.param_diffs


def test_token_ids_are_checked_where_they_enter(both_backends):
    with pytest.raises(SpecError, match="reads token ids, which only the model's input"):
        xc.infer(xc.Sequential(xc.Embedding(5, 4), xc.Embedding(5, 4), input_shape=(3,)))
    with pytest.raises(SpecError, match="only layers that look ids up"):
        xc.infer(
            xc.Sequential(xc.Add(xc.Sequential(xc.Embedding(5, 4), xc.TokenMean()), xc.Linear(3, 4)), input_shape=(3,))
        )
    with pytest.raises(SpecError, match="reads token ids of shape"):
        xc.infer(xc.Sequential(xc.Embedding(5, 4), input_shape=(3, 2, 2)))
    with pytest.raises(SpecError, match="padding_idx=5 is not one of the 5 rows"):
        xc.Embedding(5, 4, padding_idx=5)
    with pytest.raises(SpecError, match="rows=3 is fewer than length=4"):
        xc.PositionEmbedding(4, 8, rows=3)
    with pytest.raises(SpecError, match="token_type=2 is not one of the 2 types"):
        xc.TokenTypeEmbedding(2, 8, token_type=2)
    assert xc.SelfAttention(8, 2, projection=False).proj_bias is False
    model = xc.build(BERT, "numpy", seed=0)
    with pytest.raises(XconvError, match=r"takes token ids, integers in \[0, 20\)"):
        xc.predict(model, np.zeros((2, 5)))
    with pytest.raises(XconvError, match="from 0 to 20"):
        xc.predict(model, np.array([[0, 1, 2, 3, 20]]))


def test_a_text_encoder_builds_natively_and_saves(both_backends, tmp_path):
    import keras
    import torch

    keras_model = xc.build(BERT, "keras", seed=0)
    assert keras_model.inputs[0].dtype == "int64" and tuple(keras_model.inputs[0].shape) == (None, 5)
    torch_model = xc.build(BERT, "torch")
    xc.transfer_weights(keras_model, torch_model)
    ids = _ids()
    want = xc.predict(xc.build(BERT, "numpy", seed=0), ids)
    with torch.no_grad():
        assert max_rel_diff(want, torch_model(torch.from_numpy(ids)).numpy()) <= 1e-5
    path = str(tmp_path / "bert.keras")
    keras_model.save(path)
    assert max_rel_diff(want, np.asarray(keras.saving.load_model(path)(ids))) <= 1e-5
    xc.save(str(tmp_path / "bert.safetensors"), torch_model)
    loaded = xc.load_model(str(tmp_path / "bert.safetensors"), "numpy")
    assert max_rel_diff(want, xc.predict(loaded, ids)) <= 1e-5  # (float32 weights)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fault", ["rows shifted by one", "the padding row trained"])
def test_a_wrong_embedding_is_caught_at_its_node(both_backends, monkeypatch, fault, dtype):
    """The lookup reading row id + 1 (a position table read from its second row), and a padding row whose
    gradient is not stopped (it is learned in Keras but not in torch): each shows at its node. In float32 a
    gradient beyond tolerance is measured against the float64 run: the wrong gradient is not rounding."""
    import keras
    from keras import ops

    from xconv.backends.tf import builders

    class Faulty(keras.layers.Embedding):
        def call(self, ids):
            if fault == "rows shifted by one":
                return ops.take(self.embeddings, ops.minimum(ids + 1, self.input_dim - 1), axis=0)
            return super().call(ids)  # (no stop_gradient on the padding row)

    monkeypatch.setitem(
        builders._BUILDERS,
        xc.Embedding,
        lambda info, x, dtype: Faulty(
            info.layer.num_embeddings, info.layer.embed_dim, dtype=dtype, name=builders.keras_name(info)
        )(x),
    )
    what = "output" if fault == "rows shifted by one" else "grad weight"
    with pytest.raises(AssertionError, match=rf"first part at layer 0 \(Embedding\), {what}") as caught:
        assert_equivalent(BERT, None, _ids(), backends=("numpy", "tf"), dtype=dtype)
    if dtype == "float32" and what == "grad weight":
        assert "float32 rounding of the reference" in str(caught.value)  # (measured, and far below the fault)


def test_a_token_type_embedding_of_another_type_is_caught(both_backends, monkeypatch):
    from xconv.backends.tf import builders
    from xconv.kinds.token import _keras as token_keras

    monkeypatch.setitem(
        builders._BUILDERS,
        xc.TokenTypeEmbedding,
        lambda info, x, dtype: token_keras.TokenTypeEmbeddingLayer(
            info.layer.types, 1 - info.layer.token_type, dtype=dtype, name=builders.keras_name(info)
        )(x),
    )
    with pytest.raises(AssertionError, match=r"first part at layer 2 \(TokenTypeEmbedding\), output"):
        assert_equivalent(BERT, None, _ids(), backends=("numpy", "tf"), grads=False)


def _randomized(model, scale: float = 0.3):
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # every weight random: zero-initialised rows would hide a wrong lookup
            p.normal_(0.0, scale)
    return model.eval()


def _hf(kind: str):
    import_torchvision()
    import transformers

    bert = {
        "vocab_size": 40,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 24,
        "max_position_embeddings": 12,
        "num_labels": 3,
    }
    if kind == "DistilBertModel":
        config = transformers.DistilBertConfig(
            vocab_size=40, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=12
        )
        return _randomized(transformers.DistilBertModel(config))
    copies = {  # (RoBERTa's attention, class for class; ELECTRA's embeddings projected from 8 features)
        "ElectraModel": lambda: transformers.ElectraConfig(embedding_size=8, **bert),
        "XLMRobertaModel": lambda: transformers.XLMRobertaConfig(pad_token_id=1, **bert),
        "CamembertModel": lambda: transformers.CamembertConfig(pad_token_id=1, **bert),
    }
    if kind in copies:
        return _randomized(getattr(transformers, kind)(copies[kind]()))
    return _randomized(getattr(transformers, kind)(transformers.BertConfig(**bert)))


@pytest.mark.parametrize(
    ("kind", "output"),
    [
        ("BertModel", "last_hidden_state"),
        ("BertModel", "pooler_output"),
        ("BertForSequenceClassification", "logits"),
        ("DistilBertModel", "last_hidden_state"),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hugging_face_text_encoders_port_both_ways(both_backends, kind, output, dtype):
    """Called with token ids alone (no mask, no token types): the positions are a slice of a buffer holding
    arange, read as a PositionEmbedding over the whole table; the token types a buffer of zeros, read as a
    TokenTypeEmbedding of type 0; the all-True mask built from arange as no mask."""
    import torch

    model = _hf(kind).to(getattr(torch, dtype))
    keras_model = xc.port(model, to="keras", input_shape=(6,), input_dtype="int64", output=output)
    ids = _ids(length=6, vocabulary=40)
    with torch.no_grad():
        want = model(torch.from_numpy(ids))[output].numpy()
    assert max_rel_diff(want, np.asarray(keras_model(ids))) <= TOLERANCE[dtype]
    back = xc.port(keras_model, to="torch")
    with torch.no_grad():
        assert max_rel_diff(want, back(torch.from_numpy(ids)).numpy()) <= TOLERANCE[dtype]
    kinds = [i.kind for i in xc.infer(xc.spec_of(keras_model))]
    assert kinds[0] == "Embedding" and {"PositionEmbedding", "SelfAttention"} <= set(kinds)
    weights = xc.get_weights(back)
    table = model.get_input_embeddings().weight.detach().numpy()
    assert next(v for k, v in weights.items() if k.endswith("word_embeddings.weight")).tobytes() == table.tobytes()


def test_token_ids_need_an_embedding_and_a_known_dtype(both_backends):
    import torch

    with pytest.raises(XconvError, match="has no nn.Embedding"):
        xc.from_torch(torch.nn.Linear(4, 4), (4,), input_dtype="int64")
    with pytest.raises(XconvError, match="`input_dtype` is"):
        xc.from_torch(torch.nn.Embedding(4, 4), (4,), input_dtype="uint8")
    with pytest.raises(XconvError, match=r"input_shape=\(L,\)"):
        xc.from_torch(torch.nn.Embedding(4, 4), (4, 2), input_dtype="int64")
    with pytest.raises(
        UnsupportedLayerError, match='has nn.Embedding layers; if it takes token ids, give input_dtype="int64"'
    ):
        xc.from_torch(torch.nn.Sequential(torch.nn.Embedding(4, 4)), (4,))
    with pytest.raises(UnsupportedLayerError, match="writes into the module's own parameter 'weight'"):  # (max_norm)
        xc.from_torch(torch.nn.Embedding(4, 4, max_norm=1.0), (3,), input_dtype="int64")


def test_fixed_ids_other_than_positions_or_one_type_are_refused(both_backends):
    import torch

    class Shuffled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(10, 4)
            self.positions = torch.nn.Embedding(6, 4)
            self.register_buffer("order", torch.tensor([[2, 0, 1, 3]]))

        def forward(self, ids):
            return self.words(ids) + self.positions(self.order)

    with pytest.raises(UnsupportedLayerError, match=r"positions 0 to L - 1 .* here the ids are \[2, 0, 1, 3\]"):
        xc.from_torch(Shuffled().eval(), (4,), input_dtype="int64")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_roberta_ports_with_its_positions_from_the_ids(both_backends, dtype, masked):
    """RoBERTa numbers the positions of the tokens that are not padding, from the ids: checked by evaluation on
    random ids with padding, read as PaddedPositions; its token types (zeros gathered at those positions) are
    the same whatever the ids, one TokenTypeEmbedding."""
    import torch

    import_torchvision()
    import transformers

    config = transformers.RobertaConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=12,
    )
    model = _randomized(transformers.RobertaModel(config)).to(getattr(torch, dtype))
    keras_model = xc.port(
        model, to="keras", input_shape=(6,), input_dtype="int64", padding_mask=masked, output="last_hidden_state"
    )
    ids = _ids(length=6, vocabulary=40)
    ids[0, -2:] = config.pad_token_id
    mask = (ids != config.pad_token_id).astype(np.int64)
    with torch.no_grad():
        extra = (torch.from_numpy(mask),) if masked else ()
        want = model(torch.from_numpy(ids), *extra)["last_hidden_state"].numpy()
    got = xc.predict(keras_model, ids, padding_mask=mask if masked else None)
    assert max_rel_diff(want, got) <= TOLERANCE[dtype]
    kinds = [i.kind for i in xc.infer(xc.spec_of(keras_model))]
    assert {"PaddedPositions", "TokenTypeEmbedding"} <= set(kinds)


def test_ids_computed_otherwise_are_refused(both_backends):
    import torch

    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(10, 4)
            self.positions = torch.nn.Embedding(10, 4, padding_idx=1)

        def forward(self, ids):
            return self.words(ids) + self.positions((ids + 1) % 10)

    with pytest.raises(UnsupportedLayerError, match="neither the positions of the tokens that are not padding"):
        xc.from_torch(Shifted().eval(), (4,), input_dtype="int64")


@pytest.mark.parametrize("rule", ["a separator skipped", "a rare padding pattern"])
def test_positions_that_random_trials_seldom_tell_apart_are_refused(both_backends, rule):
    """Positions that match RoBERTa's on random ids but not always: a separator (id 7 of 5,000) skipped like
    padding, or the last position moved where exactly five padding tokens come before it. Neither is computed
    as RoBERTa computes its positions, so neither is taken for them, whichever ids the trials hold."""
    import torch

    class Skipping(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(5000, 8, padding_idx=1)
            self.positions = torch.nn.Embedding(20, 8, padding_idx=1)
            self.register_buffer("last", (torch.arange(6) == 5).long()[None])
            self.register_buffer("counts", torch.arange(1, 7)[None])

        def forward(self, ids):
            if rule == "a separator skipped":
                keep = ((ids != 1) & (ids != 7)).long()
                return self.words(ids) + self.positions(torch.cumsum(keep, 1) * keep + 1)
            keep = ids.ne(1).long()
            count = torch.cumsum(keep, dim=1)
            rare = (self.counts - count).ne(5).long() * (-1) + 1  # (1 where five pads came before)
            return self.words(ids) + self.positions(count * keep + 1 + rare * keep * self.last)

    with pytest.raises(UnsupportedLayerError, match="neither the positions of the tokens that are not padding"):
        xc.port(Skipping().eval(), to="keras", input_shape=(6,), input_dtype="int64")


def test_ids_that_were_constant_on_the_trials_are_not_taken_for_constants(both_backends):
    """Token types computed from the ids (1 where an id is 124): zero on most random batches, but never a
    constant; refused by name. Types gathered from a buffer of twos at positions computed from the ids are 2
    whatever the ids: one TokenTypeEmbedding, checked by port."""
    import torch

    class Flagged(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(200, 8)
            self.types = torch.nn.Embedding(2, 8)

        def forward(self, ids):
            return self.words(ids) + self.types((ids == 124).long())

    with pytest.raises(UnsupportedLayerError, match=r"module 'types' \(Embedding\) looks up ids computed from"):
        xc.from_torch(Flagged().eval(), (6,), input_dtype="int64")

    class Gathered(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(200, 8)
            self.types = torch.nn.Embedding(4, 8)
            self.register_buffer("twos", torch.full((1, 10), 2, dtype=torch.long))

        def forward(self, ids):
            return self.words(ids) + self.types(torch.gather(self.twos.expand(ids.shape[0], -1), 1, ids % 7))

    keras_model = xc.port(Gathered().eval(), to="keras", input_shape=(6,), input_dtype="int64")
    (types,) = [i.layer for i in xc.infer(xc.spec_of(keras_model)) if i.kind == "TokenTypeEmbedding"]
    assert types.token_type == 2


def test_ids_that_depend_on_the_batch_size_are_refused(both_backends):
    """Token types that are 0 at the batch size the program was exported for, and another id at any other: the
    importer runs the graph on another batch size, and sees it."""
    import torch

    class BatchTypes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(200, 8)
            self.types = torch.nn.Embedding(4, 8)
            self.register_buffer("zeros", torch.zeros(1, 6, dtype=torch.long))

        def forward(self, ids):
            return self.words(ids) + self.types(self.zeros.expand(ids.shape[0], -1) + (ids.shape[0] - 3))

    with pytest.raises(UnsupportedLayerError, match="computes something else than the forward itself"):
        xc.port(BatchTypes().eval(), to="keras", input_shape=(6,), input_dtype="int64")


def test_probe_ids_are_drawn_below_the_vocabulary_of_the_input_embedding(both_backends, monkeypatch):
    """BERT's token-type table has 2 rows; the ids the importer runs the model on reach the word vocabulary."""

    import_torchvision()
    import transformers

    from xconv.importers import torch_checks, torch_fx

    seen = []

    def spy(module, shape):
        batch = torch_checks._probe_batch(module, shape)
        seen.append((torch_checks.TOKEN_IDS.get(), int(batch[0].max())))
        return batch

    monkeypatch.setattr(torch_fx, "_probe_batch", spy)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    xc.from_torch(transformers.BertModel(config).eval(), (6,), input_dtype="int64", output="last_hidden_state")
    assert seen and seen[0][0] == 50 and seen[0][1] == 49, seen


def test_padded_positions_are_the_same_everywhere(both_backends):
    spec = xc.Sequential(
        xc.Add(
            xc.Embedding(20, 8, padding_idx=1), xc.Sequential(xc.PaddedPositions(1), xc.Embedding(8, 8, padding_idx=1))
        ),
        xc.LayerNorm(8),
        xc.TokenMean(),
        input_shape=(6,),
    )
    ids = _ids(length=6)
    ids[0, 3:] = 1
    assert_equivalent(spec, None, ids)
    with pytest.raises(SpecError, match="which reach 7, in 7 rows"):
        xc.infer(xc.Sequential(xc.PaddedPositions(1), xc.Embedding(7, 4), input_shape=(6,)))
    with pytest.raises(SpecError, match="only layers that look ids up"):
        xc.infer(xc.Sequential(xc.PaddedPositions(1), xc.Linear(6, 4), input_shape=(6,)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_keras_text_encoder_ports_both_ways(both_backends, dtype):
    """A hand-written Keras encoder on int32 ids: Embedding, MultiHeadAttention as self-attention, a residual
    LayerNormalization, a Dense on the tokens and GlobalAveragePooling1D."""
    import keras
    import torch

    inputs = keras.Input((7,), dtype="int32")
    x = keras.layers.Embedding(30, 8, dtype=dtype)(inputs)
    a = keras.layers.MultiHeadAttention(2, 4, dtype=dtype)(x, x)
    x = keras.layers.LayerNormalization(dtype=dtype)(keras.layers.Add(dtype=dtype)([x, a]))
    x = keras.layers.Dense(8, activation="relu", dtype=dtype)(x)
    x = keras.layers.GlobalAveragePooling1D(dtype=dtype)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype=dtype)(x))
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.standard_normal(v.shape) * 0.5)
    torch_model = xc.port(model, to="torch")
    ids = _ids(n=4, length=7, vocabulary=30)
    want = np.asarray(model(ids))
    with torch.no_grad():
        assert max_rel_diff(want, torch_model(torch.from_numpy(ids)).numpy()) <= TOLERANCE[dtype]
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, np.asarray(back(ids))) <= TOLERANCE[dtype]
    assert xc.infer(xc.spec_of(back))[0].kind == "Embedding"


def _keras_masked_encoder(dtype: str, keys: Any = None):
    """A hand-written Keras encoder whose second input is a padding mask, given to each MultiHeadAttention as
    its attention_mask: ``mask[:, None, :]``, then ``cast(expand_dims(mask, 1), "bool")`` (or ``keys(mask)``)."""
    import keras

    ids = keras.Input((6,), dtype="int32", name="token_ids")
    mask = keras.Input((6,), dtype="int32", name="attention_mask")
    x = keras.layers.Embedding(30, 8, dtype=dtype)(ids)
    a = keras.layers.MultiHeadAttention(2, 4, dtype=dtype)(x, x, attention_mask=mask[:, None, :])
    x = keras.layers.LayerNormalization(dtype=dtype)(keras.layers.Add(dtype=dtype)([x, a]))
    second = keras.ops.cast(keras.ops.expand_dims(mask, 1), "bool") if keys is None else keys(mask)
    a = keras.layers.MultiHeadAttention(2, 4, dtype=dtype)(x, x, attention_mask=second)
    x = keras.layers.GlobalAveragePooling1D(dtype=dtype)(keras.layers.Add(dtype=dtype)([x, a]))
    model = keras.Model([ids, mask], keras.layers.Dense(3, dtype=dtype)(x))
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.standard_normal(v.shape) * 0.5)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_attention_with_a_padding_mask_ports_both_ways(both_backends, dtype):
    """MultiHeadAttention given the padding mask's keys as its attention_mask is SelfAttention reading the
    padding mask: the torch model takes (ids, mask) and computes what the Keras model does, padded or not."""
    import torch

    model = _keras_masked_encoder(dtype)
    torch_model = xc.port(model, to="torch")
    kinds = [i.layer for i in xc.infer(xc.spec_of(torch_model)) if i.kind == "SelfAttention"]
    assert len(kinds) == 2 and all(layer.padding_mask for layer in kinds)
    ids = _ids(n=4, length=6, vocabulary=30)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 1]])
    want = np.asarray(model([ids, mask]))
    with torch.no_grad():
        got = torch_model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert max_rel_diff(want, got) <= TOLERANCE[dtype]
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, xc.predict(back, ids, padding_mask=mask)) <= TOLERANCE[dtype]
    unmasked = np.asarray(model([ids, np.ones_like(mask)]))
    assert max_rel_diff(unmasked, xc.predict(back, ids)) <= TOLERANCE[dtype]
    assert max_rel_diff(unmasked, want) > 1e-3  # (the mask matters)


def test_keras_attention_masks_other_than_the_keys_are_refused(both_backends):
    import keras

    with pytest.raises(UnsupportedLayerError, match=r"reads the padding mask .* mask\[:, None, :\]"):
        xc.from_keras(_keras_masked_encoder("float32", keys=lambda mask: mask[:, :, None]))  # (the queries)
    with pytest.raises(UnsupportedLayerError, match="reads the padding mask"):
        xc.from_keras(_keras_masked_encoder("float32", keys=lambda mask: 1 - mask[:, None, :]))  # (inverted)
    ids = keras.Input((6,), dtype="int32")
    mask = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(30, 8)(ids)
    x = keras.layers.Dense(8)(keras.ops.cast(mask, "float32")[..., None]) + x  # (a mask read as numbers)
    with pytest.raises(UnsupportedLayerError, match="reads the padding mask"):
        xc.from_keras(keras.Model([ids, mask], keras.layers.GlobalAveragePooling1D()(x)))


def test_keras_embedding_with_a_mask_is_refused(both_backends):
    import keras

    inputs = keras.Input((7,), dtype="int32")
    x = keras.layers.Embedding(30, 8, mask_zero=True)(inputs)
    with pytest.raises(UnsupportedLayerError, match="mask_zero=True"):
        xc.from_keras(keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x)))


def test_port_of_ids_reports_a_wrong_lookup(both_backends, monkeypatch):
    """An importer that read BERT's token types as type 1 (the table's other row): port's verification
    refuses it."""
    import dataclasses

    from xconv.importers import torch_ids

    real = torch_ids.fixed_embedding

    def other_type(*args, **kwargs):
        layer, state = real(*args, **kwargs)
        if isinstance(layer, xc.TokenTypeEmbedding):
            layer = dataclasses.replace(layer, token_type=1)
        return layer, state

    monkeypatch.setattr(torch_ids, "fixed_embedding", other_type)
    with pytest.raises(PortError, match="random token ids"):
        xc.port(_hf("BertModel"), to="keras", input_shape=(6,), input_dtype="int64", output="last_hidden_state")


#: BERT with its padding mask: the attention reads the model's second input
MASKED = xc.Sequential(
    xc.Embedding(20, 8, padding_idx=0),
    xc.PositionEmbedding(5, 8),
    xc.LayerNorm(8),
    xc.Add(xc.Identity(), xc.Sequential(xc.SelfAttention(8, 2, projection=False, padding_mask=True), xc.Linear(8, 8))),
    xc.LayerNorm(8),
    xc.TokenMean(),
    xc.Linear(8, 3),
    input_shape=(5,),
)


def _mask(n: int = 3, length: int = 5) -> np.ndarray:
    mask = np.ones((n, length), dtype=np.int64)
    mask[0, 3:] = 0
    mask[1, 1:] = 0  # one token
    return mask


def test_a_padding_mask_changes_the_output_and_is_the_same_everywhere(both_backends):
    import torch

    ids, mask = _ids(), _mask()
    numpy_model = xc.build(MASKED, "numpy", seed=0)
    keras_model, torch_model = xc.build(MASKED, "keras"), xc.build(MASKED, "torch")
    for model in (keras_model, torch_model):
        xc.transfer_weights(numpy_model, model)
    want = xc.predict(numpy_model, ids, padding_mask=mask)
    assert max_rel_diff(want, xc.predict(numpy_model, ids)) > 1e-3  # (the mask matters)
    for model in (keras_model, torch_model):
        assert max_rel_diff(want, xc.predict(model, ids, padding_mask=mask)) <= 1e-5
        assert max_rel_diff(xc.predict(numpy_model, ids), xc.predict(model, ids)) <= 1e-5  # none: every token
    with torch.no_grad():  # the native calls: torch_model(ids, mask), keras_model([ids, mask])
        native = torch_model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert max_rel_diff(want, native) <= 1e-5
    assert max_rel_diff(want, np.asarray(keras_model([ids, mask]))) <= 1e-5
    assert max_rel_diff(xc.predict(numpy_model, ids), np.asarray(keras_model([ids, None]))) <= 1e-5
    for imported in (xc.from_torch(torch_model, (5,)), xc.from_keras(keras_model)):  # both import with the mask
        assert [i.layer.padding_mask for i in xc.infer(imported) if i.kind == "SelfAttention"] == [True]
    with pytest.raises(XconvError, match="a token its padding_mask keeps"):
        xc.predict(numpy_model, ids, padding_mask=np.zeros_like(mask))
    with pytest.raises(XconvError, match="in the shape of the ids"):
        xc.predict(numpy_model, ids, padding_mask=mask[:, :4])
    with pytest.raises(XconvError, match="reads none"):
        xc.predict(xc.build(BERT, "numpy"), ids, padding_mask=mask)
    with pytest.raises(SpecError, match="does not take token ids"):
        xc.infer(
            xc.Sequential(
                xc.Conv2d(2, 4, 1), xc.ToTokens(), xc.SelfAttention(4, 2, padding_mask=True), input_shape=(2, 2, 2)
            )
        )


def test_a_padding_mask_inverted_is_caught_at_its_node(both_backends, monkeypatch):
    """A Keras attention that attends to the padding instead of the tokens; the real one passes."""
    from xconv.kinds.token import _keras as token_keras

    class Inverted(token_keras.SelfAttentionLayer):
        def call(self, x, padding_mask=None, training=None):
            return super().call(x, None if padding_mask is None else 1 - padding_mask, training)

    real = token_keras.SelfAttentionLayer
    monkeypatch.setattr(token_keras, "SelfAttentionLayer", Inverted)
    mask = _mask()
    mask[1] = [1, 1, 0, 1, 0]  # (every row keeps a token either way)
    mask[0] = [1, 0, 1, 1, 0]
    mask[2] = [0, 1, 1, 1, 0]
    with pytest.raises(AssertionError, match=r"first part at layer 3\.1\.0 \(SelfAttention\), output"):
        assert_equivalent(MASKED, None, _ids(), backends=("numpy", "tf"), padding_mask=mask, grads=False)
    monkeypatch.setattr(token_keras, "SelfAttentionLayer", real)
    assert_equivalent(MASKED, None, _ids(), backends=("numpy", "tf"), padding_mask=mask, grads=False)


@pytest.mark.parametrize("kind", ["BertModel", "DistilBertModel", "ElectraModel", "XLMRobertaModel", "CamembertModel"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hugging_face_encoders_with_an_attention_mask_port(both_backends, kind, dtype):
    """Hugging Face builds its sdpa mask from attention_mask; checked to be the mask's keys broadcast over
    the queries (on several masks), it is read as the padding mask the attention reads."""
    import torch

    model = _hf(kind).to(getattr(torch, dtype))
    keras_model = xc.port(
        model, to="keras", input_shape=(6,), input_dtype="int64", padding_mask=True, output="last_hidden_state"
    )
    ids, mask = _ids(length=6, vocabulary=40), _mask(length=6)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask))["last_hidden_state"].numpy()
    assert max_rel_diff(want, xc.predict(keras_model, ids, padding_mask=mask)) <= TOLERANCE[dtype]
    back = xc.port(keras_model, to="torch")
    with torch.no_grad():
        assert max_rel_diff(want, back(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()) <= TOLERANCE[dtype]


@pytest.mark.parametrize(("side", "reader"), [("padding_mask", "attention"), ("token_types", "an embedding")])
def test_a_side_input_read_by_anything_but_its_reader_is_refused(both_backends, side, reader):
    """A padding mask, or token types, multiplying the embeddings: only attention reads the one, only an
    embedding added to the tokens the other."""
    import torch

    class Gated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(10, 4)

        def forward(self, ids, given):
            return self.words(ids) * given[..., None]

    with pytest.raises(UnsupportedLayerError, match=f"reads the {side.replace('_', ' ')}"):
        xc.from_torch(Gated().eval(), (4,), input_dtype="int64", **{side: True})
    with pytest.raises(XconvError, match='give input_dtype="int64"'):
        xc.from_torch(Gated().eval(), (4,), **{side: True})


def test_the_cli_checks_a_text_encoder_with_a_padding_mask(both_backends, tmp_path, capsys):
    """`xconv check` on a saved checkpoint and on a .keras file of a model that takes ids and a padding mask."""
    from xconv import cli

    xc.save(str(tmp_path / "bert.safetensors"), xc.build(MASKED, "torch", seed=0))
    xc.build(MASKED, "keras", seed=0).save(str(tmp_path / "bert.keras"))
    for name in ("bert.safetensors", "bert.keras"):
        assert cli.main(["check", str(tmp_path / name)]) == 0, capsys.readouterr()
        assert "OK: torch and tf agree on every layer" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["BertModel", "DistilBertModel"])
def test_a_hugging_face_state_dict_loads_into_the_ported_models(both_backends, kind):
    """The fused in_proj_weight names the separate query, key and value weights as its source keys: the
    original's state_dict loads into both built models by its own keys, and they compute what it does."""
    import torch

    model = _hf(kind).eval()
    output = "last_hidden_state"
    spec = xc.from_torch(model, (6,), input_dtype="int64", output=output)
    fused = [i.layer.keys for i in xc.infer(spec) if i.kind == "SelfAttention"]
    assert fused and all(isinstance(dict(k)["in_proj_weight"], tuple) for k in fused)
    assert xc.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # (the keys survive a spec file)
    ids = _ids(length=6, vocabulary=40)
    with torch.no_grad():
        want = model(torch.from_numpy(ids))[output].numpy()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for backend in ("torch", "keras"):
        built = xc.build(spec, backend, seed=1)  # (other weights, replaced by the state_dict's)
        unused = xc.set_weights(built, state, strict=False)
        assert all(k.startswith("pooler.") for k in unused), unused
        assert max_rel_diff(want, xc.predict(built, ids)) <= TOLERANCE["float32"]
    swapped = dict(state)  # query and key exchanged: read in the order the keys give, so it is seen
    first = next(k for k in state if k.endswith(("query.weight", "q_lin.weight")))
    other = first.replace("query", "key").replace("q_lin", "k_lin")
    swapped[first], swapped[other] = state[other], state[first]
    built = xc.build(spec, "torch")
    xc.set_weights(built, swapped, strict=False)
    assert max_rel_diff(want, xc.predict(built, ids)) > 1e-3


def test_fused_source_keys_are_checked(both_backends):
    with pytest.raises(SpecError, match="lists of two or more"):
        xc.SelfAttention(8, 2, keys={"in_proj_weight": ["q.weight"]})
    with pytest.raises(SpecError, match="already the key of another weight"):
        xc.infer(
            xc.Sequential(
                xc.SelfAttention(8, 2, keys={"in_proj_weight": ["a", "b", "c"], "in_proj_bias": ["a", "d", "e"]}),
                input_shape=(3, 8),
            )
        )
    spec = xc.Sequential(
        xc.SelfAttention(8, 2, name="att", keys={"in_proj_weight": ["q", "k", "v"]}), input_shape=(3, 8)
    )
    model = xc.build(spec, "numpy", seed=0)
    weights = xc.get_weights(model)
    parts = np.split(weights["att.in_proj_weight"], 3)
    rest = {k: v for k, v in weights.items() if k != "att.in_proj_weight"}
    assert xc.set_weights(model, {**rest, "q": parts[0], "k": parts[1], "v": parts[2]}) == []
    assert np.array_equal(xc.get_weights(model)["att.in_proj_weight"], weights["att.in_proj_weight"])
    with pytest.raises(xc.WeightError, match="att.in_proj_weight"):
        xc.set_weights(model, {**rest, "q": parts[0], "k": parts[1], "v": parts[2][:4]})


#: BERT with its padding mask and token types: the attention reads the model's second input, the token-type
#: embedding its third
TYPED = xc.Sequential(
    xc.Embedding(20, 8, padding_idx=0),
    xc.PositionEmbedding(5, 8),
    xc.TokenTypeEmbedding(3, 8, token_types=True),
    xc.LayerNorm(8),
    xc.Add(xc.Identity(), xc.Sequential(xc.SelfAttention(8, 2, projection=False, padding_mask=True), xc.Linear(8, 8))),
    xc.LayerNorm(8),
    xc.SelectToken(0),
    xc.Linear(8, 3),
    input_shape=(5,),
)


def _types(n: int = 3, length: int = 5, count: int = 3, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, count, (n, length))


def test_token_types_change_the_output_and_are_the_same_everywhere(both_backends):
    """Each token's type from the model's third input, in numpy, torch and Keras, natively and imported
    back; left out, every token is of type 0."""
    import torch

    ids, mask, types = _ids(), _mask(), _types()
    numpy_model = xc.build(TYPED, "numpy", seed=0)
    keras_model, torch_model = xc.build(TYPED, "keras"), xc.build(TYPED, "torch")
    for model in (keras_model, torch_model):
        xc.transfer_weights(numpy_model, model)
    want = xc.predict(numpy_model, ids, padding_mask=mask, token_types=types)
    zeros = xc.predict(numpy_model, ids, padding_mask=mask, token_types=np.zeros_like(types))
    assert max_rel_diff(want, zeros) > 1e-3  # (the types matter)
    assert max_rel_diff(zeros, xc.predict(numpy_model, ids, padding_mask=mask)) == 0.0  # (left out: type 0)
    for model in (keras_model, torch_model):
        assert max_rel_diff(want, xc.predict(model, ids, padding_mask=mask, token_types=types)) <= 1e-5
        assert max_rel_diff(zeros, xc.predict(model, ids, padding_mask=mask)) <= 1e-5
    with torch.no_grad():  # the native calls: torch_model(ids, mask, types), keras_model([ids, mask, types])
        native = torch_model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)).numpy()
        by_name = torch_model(torch.from_numpy(ids), token_types=torch.from_numpy(types)).numpy()
    assert max_rel_diff(want, native) <= 1e-5
    assert max_rel_diff(want, np.asarray(keras_model([ids, mask, types]))) <= 1e-5
    assert max_rel_diff(xc.predict(numpy_model, ids, token_types=types), by_name) <= 1e-5
    assert [t.name for t in keras_model.inputs] == ["input", "padding_mask", "token_types"]
    for imported in (xc.from_torch(torch_model, (5,)), xc.from_keras(keras_model)):
        (typed,) = [i.layer for i in xc.infer(imported) if i.kind == "TokenTypeEmbedding"]
        assert typed.token_types and typed.types == 3
    assert_equivalent(TYPED, None, ids, padding_mask=mask, token_types=types)
    assert_equivalent(TYPED, None, ids, dtype="float32", padding_mask=mask, token_types=types)
    with pytest.raises(XconvError, match=r"token_types must be integers in \[0, 3\)"):
        xc.predict(numpy_model, ids, token_types=types + 1)
    with pytest.raises(XconvError, match="in the shape of the ids"):
        xc.predict(numpy_model, ids, token_types=types[:, :4])
    with pytest.raises(XconvError, match="token_types must be integers"):
        xc.predict(numpy_model, ids, token_types=types.astype(np.float32))
    with pytest.raises(XconvError, match="no layer of the model reads them"):
        xc.predict(xc.build(BERT, "numpy"), ids, token_types=types)
    with pytest.raises(SpecError, match="token_type=1 would not be used"):
        xc.TokenTypeEmbedding(2, 8, token_type=1, token_types=True)
    with pytest.raises(SpecError, match="does not take token ids"):
        xc.infer(xc.Sequential(xc.Linear(4, 4), xc.TokenTypeEmbedding(2, 4, token_types=True), input_shape=(3, 4)))


def test_token_types_read_wrong_are_caught_at_their_node(both_backends, monkeypatch):
    """A Keras token-type embedding that reads each token's type from its neighbour; the real one passes."""
    from keras import ops

    from xconv.kinds.token import _keras as token_keras

    class Shifted(token_keras.TokenTypeEmbeddingLayer):
        def call(self, x, token_types=None):
            return super().call(x, None if token_types is None else ops.roll(token_types, 1, axis=1))

    real = token_keras.TokenTypeEmbeddingLayer
    monkeypatch.setattr(token_keras, "TokenTypeEmbeddingLayer", Shifted)
    args = {"padding_mask": _mask(), "token_types": _types(), "grads": False, "backends": ("numpy", "tf")}
    with pytest.raises(AssertionError, match=r"first part at layer 2 \(TokenTypeEmbedding\), output"):
        assert_equivalent(TYPED, None, _ids(), **args)
    monkeypatch.setattr(token_keras, "TokenTypeEmbeddingLayer", real)
    assert_equivalent(TYPED, None, _ids(), **args)


def test_a_small_bert_with_token_types_trains_the_same_with_adam(both_backends):
    """The token-type table's gradient is dense in Keras too: Adam sums each type's tokens first, as torch."""
    r = train_parity(TYPED, steps=10, dtype="float64", optimizer="adam", lr=1e-3, batch=6, seed=3)
    assert r.torch_losses[-1] < r.torch_losses[0]
    assert r.max_param_diff <= 1e-9, r.param_diffs


def _typed_port(model):
    """A Hugging Face BERT ported to Keras as called with its attention mask and token types."""
    args = {"input_dtype": "int64", "padding_mask": True, "token_types": True, "output": "last_hidden_state"}
    return xc.port(model, to="keras", input_shape=(6,), **args)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hugging_face_bert_with_token_types_ports_both_ways(both_backends, dtype):
    """BertModel(input_ids, attention_mask, token_type_ids): the token-type embedding reads the third
    argument; port checks it with random types (and the mask), and without either."""
    import torch

    model = _hf("BertModel").to(getattr(torch, dtype))
    keras_model = _typed_port(model)
    ids, mask, types = _ids(length=6, vocabulary=40), _mask(length=6), _types(length=6, count=2)
    with torch.no_grad():
        want = model(*(torch.from_numpy(a) for a in (ids, mask, types)))["last_hidden_state"].numpy()
        plain = model(torch.from_numpy(ids), torch.from_numpy(mask))["last_hidden_state"].numpy()
    assert max_rel_diff(want, plain) > 1e-3  # (the types matter)
    got = xc.predict(keras_model, ids, padding_mask=mask, token_types=types)
    assert max_rel_diff(want, got) <= TOLERANCE[dtype]
    back = xc.port(keras_model, to="torch")
    with torch.no_grad():
        again = back(*(torch.from_numpy(a) for a in (ids, mask, types))).numpy()
    assert max_rel_diff(want, again) <= TOLERANCE[dtype]
    (typed,) = [i.layer for i in xc.infer(xc.spec_of(back)) if i.kind == "TokenTypeEmbedding"]
    assert typed.token_types and typed.name == "embeddings.token_type_embeddings"  # (its state_dict key)
    weights = xc.get_weights(back)
    table = model.embeddings.token_type_embeddings.weight.detach().numpy()
    assert weights["embeddings.token_type_embeddings.weight"].tobytes() == table.tobytes()


def test_port_reports_token_types_read_as_one_type(both_backends, monkeypatch):
    """An importer that read the token types' lookup as type 0 everywhere: port's check with random types
    refuses it."""
    import dataclasses

    from xconv.importers import torch_ids

    real = torch_ids.types_embedding

    def one_type(*args, **kwargs):
        layer, state = real(*args, **kwargs)
        return dataclasses.replace(layer, token_types=False), state

    monkeypatch.setattr(torch_ids, "types_embedding", one_type)
    with pytest.raises(PortError, match="with padding and token types"):
        _typed_port(_hf("BertModel"))


def test_a_forward_that_requires_its_token_types_ports(both_backends):
    """forward(ids, types) with no default: port checks it with random types, and with zeros where it checks
    the ids alone."""
    import torch

    class Typed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words, self.kinds = torch.nn.Embedding(20, 8), torch.nn.Embedding(3, 8)

        def forward(self, ids, types):
            return self.words(ids) + self.kinds(types)

    torch.manual_seed(0)
    model = Typed().eval()
    keras_model = xc.port(model, to="keras", input_shape=(5,), input_dtype="int64", token_types=True)
    ids, types = _ids(), _types()
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(types)).numpy()
    assert max_rel_diff(want, xc.predict(keras_model, ids, token_types=types)) <= TOLERANCE["float32"]


def _keras_typed_encoder(dtype: str):
    """Keras: word and segment embeddings added, a LayerNorm, self-attention with the padding mask's keys;
    inputs in the order ids, segment ids, mask (named otherwise than xconv names them)."""
    import keras

    ids = keras.Input((5,), dtype="int32", name="token_ids")
    segments = keras.Input((5,), dtype="int32", name="segment_ids")
    mask = keras.Input((5,), dtype="int32", name="mask")
    x = keras.layers.Add(dtype=dtype)(
        [keras.layers.Embedding(20, 8, dtype=dtype)(ids), keras.layers.Embedding(3, 8, dtype=dtype)(segments)]
    )
    x = keras.layers.LayerNormalization(dtype=dtype)(x)
    keys = keras.ops.expand_dims(mask, 1)
    x = x + keras.layers.MultiHeadAttention(2, 4, dtype=dtype)(x, x, attention_mask=keys)
    model = keras.Model([ids, segments, mask], keras.layers.GlobalAveragePooling1D(dtype=dtype)(x))
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.5, w.shape))
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_keras_encoder_with_segment_ids_ports_both_ways(both_backends, dtype):
    import torch

    model = _keras_typed_encoder(dtype)
    torch_model = xc.port(model, to="torch")
    ids, mask, types = _ids(), _mask(), _types()
    want = np.asarray(model([ids, types, mask]))
    with torch.no_grad():
        got = torch_model(*(torch.from_numpy(a) for a in (ids, mask, types))).numpy()
    assert max_rel_diff(want, got) <= TOLERANCE[dtype]
    back = xc.port(torch_model, to="keras")
    assert max_rel_diff(want, np.asarray(back([ids, mask, types]))) <= TOLERANCE[dtype]
    assert (
        max_rel_diff(np.asarray(model([ids, np.zeros_like(types), mask])), xc.predict(back, ids, padding_mask=mask))
        <= TOLERANCE[dtype]
    )
