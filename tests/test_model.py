"""The model: factored co-attention equals the literal formula, padding never reaches real tokens, and the
attention variants behave as the equations say."""
import pytest
import torch

import data_loader as data
from bench import LiteralACN, literal_coattention
from model import ACN, CharCNN, ModelConfig, reverse_each


def config(**overrides):
    return ModelConfig(**{"num_words": 30, "num_chars": 20, "num_tags": 5, "word_emb_dim": 12, "char_emb_dim": 6,
                          "final_char_dim": 8, "num_filters": 4, "hidden_dim": 16, **overrides})


def random_batch(lengths, word_len=6, seed=0, num_words=30, num_chars=20, num_tags=5):
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for i, n in enumerate(lengths):
        chars = torch.randint(2, num_chars, (n, word_len), generator=generator)
        for t in range(n):  # words of different lengths
            chars[t, 1 + (t % word_len):] = 0
        examples.append(data.Example(i, torch.randint(2, num_words, (n,), generator=generator), chars,
                                     torch.randint(0, num_tags, (n,), generator=generator), i + 1))
    regions = [torch.zeros(49, 512)] + [torch.rand(49, 512, generator=generator) for _ in lengths]
    return examples, data.FeatureTable(regions, {}, [])


def test_factored_coattention_equals_literal_formula():
    torch.manual_seed(0)
    model = ACN(config())
    B, S, R, k = 3, 7, 49, 16
    regions, words = torch.randn(B, R, k), torch.randn(B, S, k)
    word_mask = torch.arange(S)[None, :] < torch.tensor([[7], [4], [1]])
    v_hat, alpha = model.visual_attention(regions, words)
    h_hat, beta = model.textual_attention(words, v_hat, word_mask)
    ref_v, ref_alpha, ref_h, ref_beta = literal_coattention(model.visual_attention, model.textual_attention,
                                                            regions, words, word_mask)
    for ours, ref in ((v_hat, ref_v), (alpha, ref_alpha), (h_hat, ref_h), (beta, ref_beta)):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
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
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = model.loss(batch).item()
    for _ in range(30):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first
    assert [len(tags) for tags in model.decode(batch)] == [5, 7, 3]


def test_flipped_bilstm_equals_packed_bilstm():
    """The speed-up of TextEncoder keeps its results: same numbers as nn.LSTM(bidirectional) on packed input."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
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


def test_fused_adam_makes_the_same_update():
    """Fused Adam computes the same model. Compared on outputs: with the concat attention the query-side parameters
    (W_H, b_H, w_query, b_α) get gradients that are zero up to rounding, since the softmax cancels them; Adam
    scales even those to full-size steps, so those parameters drift with rounding noise without changing any
    output."""
    torch.manual_seed(0)
    examples, features = random_batch([5, 7])
    batch = data.collate(examples, features)
    models = [ACN(config()) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    for model, fused in zip(models, (False, True)):
        model.eval()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else False)
        for _ in range(3):
            loss = model.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(models[0](batch)[0], models[1](batch)[0], rtol=1e-5, atol=1e-5)
    a, b = models[0].text_encoder.forward_lstm.weight_ih_l0, models[1].text_encoder.forward_lstm.weight_ih_l0
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # a parameter with real gradients: same values
