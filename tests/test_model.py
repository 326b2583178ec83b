"""The model: factored co-attention equals the literal formula, padding never reaches real tokens, and the
attention variants behave as the equations say."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import data_loader as data
import model as model_module
import trainer
from model import ACN, CharCNN, ModelConfig, reverse_each
from trainer import build_model
from conftest import TensorSizeLimit, random_examples, train_on_batch
from reference_model import LiteralACN, literal_coattention


def config(**overrides):
    return ModelConfig(**{"num_words": 30, "num_chars": 20, "num_tags": 5, "word_emb_dim": 12, "char_emb_dim": 6,
                          "final_char_dim": 8, "num_filters": 4, "hidden_dim": 16, **overrides})


def random_batch(lengths, word_len=6, seed=0):
    return random_examples(lengths, word_len, seed)


def test_factored_coattention_equals_literal_formula():
    """With concat, v̂, α and ĥ come as one row per tweet (B, 1, ·): the literal formula's rows, every one."""
    torch.manual_seed(0)
    model = ACN(config())
    B, S, R, k = 3, 7, 49, 16
    regions, words = torch.randn(B, R, k), torch.randn(B, S, k)
    word_mask = torch.arange(S)[None, :] < torch.tensor([[7], [4], [1]])
    v_hat, alpha = model.visual_attention(regions, words)
    h_hat, beta = model.textual_attention(words, v_hat, word_mask)
    ref_v, ref_alpha, ref_h, ref_beta = literal_coattention(model.visual_attention, model.textual_attention,
                                                            regions, words, word_mask)
    assert v_hat.shape == (B, 1, k) and alpha.shape == (B, 1, R) and h_hat.shape == (B, 1, k)
    for ours, ref in ((v_hat, ref_v), (alpha, ref_alpha), (h_hat, ref_h), (beta, ref_beta)):
        torch.testing.assert_close(ours.expand_as(ref), ref, rtol=1e-5, atol=1e-6)
    assert beta[1, :, 4:].eq(0).all() and beta[2, :, 1:].eq(0).all()  # pads never attended


def test_factored_and_literal_models_give_same_loss_and_gradients():
    torch.manual_seed(0)
    factored = ACN(config())
    literal = LiteralACN(config())
    literal.load_state_dict(factored.state_dict())
    factored.eval(), literal.eval()
    examples, features = random_batch([5, 3, 8])
    batch = data.collate(examples, features)
    loss_f, loss_l = factored.loss(batch), literal.loss(batch)
    loss_f.backward(), loss_l.backward()
    torch.testing.assert_close(loss_f, loss_l, rtol=1e-5, atol=1e-5)
    for (name, p_f), p_l in zip(factored.named_parameters(), literal.parameters()):
        torch.testing.assert_close(p_f.grad, p_l.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_long_tweets_match_the_literal_formulation():
    """The textual attention computed as one vector per tweet (concat) gives the literal (S, S) formulation's
    emissions and maps, on a tweet of 300 words batched with a short one."""
    torch.manual_seed(0)
    factored, literal = ACN(config()).eval(), LiteralACN(config()).eval()
    literal.load_state_dict(factored.state_dict())
    examples, features = random_batch([300, 7])
    batch = data.collate(examples, features)
    with torch.no_grad():
        (emissions, maps), (ref_emissions, ref_maps) = factored(batch), literal(batch)
    torch.testing.assert_close(emissions, ref_emissions, rtol=1e-5, atol=1e-5)
    for name in ("visual", "textual"):
        torch.testing.assert_close(maps[name], ref_maps[name], rtol=1e-5, atol=1e-6)
    assert factored.decode(batch) == literal.decode(batch)


@pytest.mark.parametrize("attention, length", [("concat", 20_000), ("additive", 2_000)])
def test_memory_of_a_long_tweet_grows_linearly(attention, length, monkeypatch):
    """Prediction accepts tweets of any length: no tensor of the forward pass grows with S * S (20,000 words: 1.6 GB
    for one (S, S) float tensor; the CRF after it is linear). concat: the textual attention is one vector per
    tweet; additive: chunks of query words, whose tensors hold at most ADDITIVE_CHUNK_ELEMENTS (made small here so
    that chunks show at 2,000 words)."""
    monkeypatch.setattr(model_module, "ADDITIVE_CHUNK_ELEMENTS", 2 ** 18)
    torch.manual_seed(0)
    model = ACN(config(attention=attention)).eval()
    batch = data.collate(*random_batch([length]))
    with torch.no_grad(), TensorSizeLimit(max_bytes=256 * 4 * length) as limit:  # S * S floats: S / 256 times more
        emissions, maps = model(batch, textual_map=False)
    assert emissions.shape == (1, length, 5) and limit.largest >= 49 * 4 * length  # α, (S, 49), was seen


def test_additive_attention_in_chunks_equals_in_one_piece(monkeypatch):
    torch.manual_seed(0)
    model = ACN(config(attention="additive")).eval()
    batch = data.collate(*random_batch([9, 4]))
    with torch.no_grad():
        emissions, maps = model(batch)
        monkeypatch.setattr(model_module, "ADDITIVE_CHUNK_ELEMENTS", 1)  # one query word per chunk
        chunked_emissions, chunked_maps = model(batch)
    torch.testing.assert_close(chunked_emissions, emissions)
    for name in ("visual", "textual"):
        torch.testing.assert_close(chunked_maps[name], maps[name])
    assert model(batch, textual_map=False)[1]["textual"] is None


@pytest.mark.parametrize("use_image, attention", [(True, "concat"), (True, "additive"), (False, "concat")])
def test_padding_leaves_real_tokens_unchanged(use_image, attention):
    torch.manual_seed(0)
    model = ACN(config(use_image=use_image, attention=attention)).eval()
    examples, features = random_batch([4, 11], word_len=9)  # the second tweet is longer, with longer words
    short = examples[0]
    short.char_ids = short.char_ids[:, :3]  # the short tweet's words are at most 3 characters
    alone = data.collate([short], features)
    padded = data.collate([short, examples[1]], features)
    assert padded.char_ids.shape[1:] == (11, 9) and alone.char_ids.shape[1:] == (4, 3)
    with torch.no_grad():
        e_alone, _ = model(alone)
        e_padded, _ = model(padded)
    torch.testing.assert_close(e_padded[0, :4], e_alone[0], rtol=1e-5, atol=1e-6)
    assert model.decode(padded)[0] == model.decode(alone)[0]


def test_char_cnn_ignores_padding_characters():
    torch.manual_seed(0)
    cnn = CharCNN(20, 6, (2, 3, 4), 4, 8, dropout=0.0)
    word = torch.tensor([[[5, 6, 7]]])
    longer = torch.tensor([[[5, 6, 7, 0, 0, 0, 0]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    torch.testing.assert_close(cnn(word, mask), cnn(longer, mask))


def test_reverse_each_reverses_real_words_only():
    x = torch.arange(8.0).view(2, 4, 1)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert reverse_each(x, mask).view(2, 4).tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]


def test_concat_attention_is_the_same_for_every_word_additive_is_not():
    examples, features = random_batch([6])
    batch = data.collate(examples, features)
    for attention in ("concat", "additive"):
        torch.manual_seed(0)
        model = ACN(config(attention=attention)).eval()
        with torch.no_grad():  # sharper scores than at initialisation, so that differences show
            for attention_module in (model.visual_attention, model.textual_attention):
                attention_module.scores.score.weight.normal_(std=3.0)
                attention_module.scores.query_proj.weight.normal_(std=3.0)
            _, maps = model(batch)
        alpha, beta = maps["visual"][0], maps["textual"][0]  # (S, 49), (S, S)
        if attention == "concat":
            torch.testing.assert_close(alpha[0], alpha[3])
            torch.testing.assert_close(beta[0], beta[5])
        else:
            assert (alpha[0] - alpha[3]).abs().max() > 0.01
            assert (beta[0] - beta[5]).abs().max() > 1e-3  # concat: equal to float precision (~1e-8)
        torch.testing.assert_close(alpha.sum(-1), torch.ones(6))


def test_loss_decreases_when_training_on_a_batch():
    torch.manual_seed(0)
    model = ACN(config())
    examples, features = random_batch([5, 7, 3])
    batch = data.collate(examples, features)
    first, last = train_on_batch(model, batch, learning_rate=0.01)
    assert last < 0.2 * first
    assert [len(tags) for tags in model.decode(batch)] == [5, 7, 3]


def test_flipped_bilstm_equals_packed_bilstm():
    """The speed-up of TextEncoder keeps its results: same numbers as nn.LSTM(bidirectional) on packed input."""
    torch.manual_seed(0)
    model = ACN(config())
    encoder = model.text_encoder
    packed_lstm = torch.nn.LSTM(12 + 8, 8, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(packed_lstm, name).copy_(getattr(encoder.forward_lstm, name))
            getattr(packed_lstm, name + "_reverse").copy_(getattr(encoder.backward_lstm, name))
    examples, _ = random_batch([5, 9, 2])
    batch = data.collate(examples)
    model.eval()
    x = torch.cat([encoder.word_emb(batch.word_ids), encoder.char_cnn(batch.char_ids, batch.word_mask)], dim=-1)
    lengths = batch.word_mask.sum(1)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(packed_lstm(packed)[0], batch_first=True, total_length=9)
    torch.testing.assert_close(encoder(batch.word_ids, batch.char_ids, batch.word_mask), expected,
                               rtol=1e-5, atol=1e-6)


# The query-side parameters of the concat attention: the softmax over items cancels their term, so their gradient
# is zero up to rounding (docs/model.md, the attention property).
CONCAT_QUERY_SIDE = ("visual_attention.scores.query_proj.", "textual_attention.scores.query_proj.",
                     "visual_attention.scores.score.bias", "textual_attention.scores.score.bias")


@pytest.mark.parametrize("use_image, attention", [(True, "concat"), (True, "additive"), (False, "concat")])
def test_every_parameter_gets_a_gradient(use_image, attention):
    torch.manual_seed(0)
    model = ACN(config(use_image=use_image, attention=attention))
    examples, features = random_batch([5, 7, 3])
    model.loss(data.collate(examples, features if use_image else None)).backward()
    for name, parameter in model.named_parameters():
        grad = parameter.grad
        if use_image and attention == "concat" and name.startswith(CONCAT_QUERY_SIDE):
            assert grad is None or grad.abs().max() < 1e-5, name  # cancelled by the softmax
        elif name == "text_encoder.word_emb.weight":  # only the rows of words in the batch
            assert grad[2:].abs().sum() > 0 and grad[0].abs().sum() == 0, name  # never the pad row
        else:
            assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("architecture", ["paper", "authors"])
def test_loss_refuses_a_tag_the_model_does_not_know(architecture):
    model = build_model(config(architecture=architecture))
    examples, features = random_batch([4, 3])
    examples[1].tag_ids[2] = -1  # data_loader's code for a gold tag missing from the vocabulary
    batch = data.collate(examples, features)
    assert batch.tag_ids[1, 2] == -1  # collate keeps it: not clamped to tag 0 ("O")
    with pytest.raises(ValueError, match="not among the model's tags"):
        model.loss(batch)
    model.eval()
    assert len(model.decode(batch)[1]) == 3  # prediction does not need gold tags


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_smoke_one_step_and_one_evaluation():
    torch.manual_seed(0)
    model = ACN(config()).cuda()
    examples, features = random_batch([5, 7, 3])
    optimizer = trainer.make_optimizer("adam", model.parameters(), 1e-3)
    batch = data.collate(examples, features).to(torch.device("cuda"))
    first = trainer.train_step(model, optimizer, batch)
    assert next(model.parameters()).is_cuda and first > 0
    cpu_model = ACN(config())
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    assert model.decode(batch) == cpu_model.decode(data.collate(examples, features))
