"""AuthorsACN, the authors' released Keras 1.2 network: the Keras parameter count, the released input layout
(tweets right-aligned, a pad label in the CRF, nothing masked), Keras 1.2 initialisation and hard-sigmoid LSTMs."""
import math

import pytest
import torch

import data_loader as data
from conftest import TensorSizeLimit, random_examples, train_on_batch
from model import ACN, ModelConfig
from model_authors import AuthorsACN, KerasBiLSTM, hard_sigmoid, left_align, right_align, theano_same_padding
from trainer import build_model

NUM_WORDS, NUM_CHARS, NUM_TAGS = 40, 25, 9  # 9 tags: O and B-/I- of four types, as Twitter-2015


def small_config(**overrides):
    return ModelConfig(**{"num_words": NUM_WORDS, "num_chars": NUM_CHARS, "num_tags": NUM_TAGS, "word_emb_dim": 8,
                          "char_emb_dim": 6, "final_char_dim": 5, "num_filters": 4, "hidden_dim": 6,
                          "max_word_len": 8, "max_seq_len": 10, "architecture": "authors", **overrides})


def default_config():
    return ModelConfig(num_words=NUM_WORDS, num_chars=NUM_CHARS, num_tags=NUM_TAGS, architecture="authors")


def make_batch(lengths, word_len=5, seed=0):
    examples, features = random_examples(lengths, word_len, seed, NUM_WORDS, NUM_CHARS, NUM_TAGS)
    return data.collate(examples, features)


def keras_parameter_count(config):
    """Trainable parameters of the released Keras model (multimodal_ner.py), from its layer sizes and Keras'
    formulas. A Keras LSTM has one bias per gate: 4 (in u + u u + u) per direction (torch's nn.LSTM would add a
    second bias, 4u per direction; KerasBiLSTM has none)."""
    def lstm(inputs, units):
        return 4 * (inputs * units + units * units + units)

    def dense(inputs, outputs):
        return inputs * outputs + outputs

    w, k, labels = config.word_emb_dim, config.hidden_dim, config.num_tags + 1
    convs, channels = 0, config.char_emb_dim
    for width in config.kernel_sizes:
        convs += width * channels * config.num_filters + config.num_filters
        channels = config.num_filters
    positions = config.max_word_len // 2 ** len(config.kernel_sizes)
    text = (config.num_words * w + 2 * lstm(w, w)                                     # word embedding, BiLSTM 1
            + config.num_chars * config.char_emb_dim + convs + 2 * config.num_filters  # BatchNorm: gamma, beta
            + dense(positions * config.num_filters, 100) + dense(100, config.final_char_dim)
            + 2 * lstm(2 * w + config.final_char_dim, k))                             # BiLSTM 2
    visual = dense(2 * k, k) + dense(config.region_dim, k) + dense(2 * k, 1) + dense(config.region_dim, k)
    textual = dense(k, k) + dense(2 * k, k) + dense(2 * k, 1)
    fusion = 2 * dense(k, k) + dense(k, 1) + dense(2 * k, k) + dense(k, 1)
    output = dense(2 * k, k) + dense(2 * k, labels) + labels * labels + 2 * labels    # ChainCRF: U, b_start, b_end
    return text + visual + textual + fusion + output


@pytest.mark.parametrize("config", [small_config(), default_config()], ids=["small", "default"])
def test_parameter_count_equals_the_keras_model(config):
    model = AuthorsACN(config)
    assert all(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == keras_parameter_count(config)
    assert dict(model.char_cnn.batch_norm.named_buffers()).keys() >= {"running_mean", "running_var"}  # not trained


def test_default_size_count_by_hand():
    """The same count written out for the default sizes (40 words, 25 chars, 9 tags + the pad label)."""
    lstm_words, lstm_text = 2 * 4 * (200 * 200 + 200 * 200 + 200), 2 * 4 * (450 * 200 + 200 * 200 + 200)
    char_cnn = 25 * 30 + (2 * 30 * 32 + 32) + (3 * 32 * 32 + 32) + (4 * 32 * 32 + 32) + 64 + 9700 + 5050
    attention = 80200 + 102600 + 401 + 102600 + 40200 + 80200 + 401
    fusion_and_output = 40200 + 40200 + 201 + 80200 + 201 + 80200 + (400 * 10 + 10) + (100 + 20)
    expected = 40 * 200 + lstm_words + char_cnn + lstm_text + attention + fusion_and_output
    assert sum(p.numel() for p in AuthorsACN(default_config()).parameters()) == expected == 2367882


def test_released_layout_right_aligns_tweets_pads_characters_and_labels_pads():
    model = AuthorsACN(small_config(max_seq_len=5, max_word_len=8))
    batch = make_batch([3, 1, 0], word_len=4)
    lengths = batch.word_mask.sum(1)
    word_ids, char_ids = model.released_inputs(batch.word_ids, batch.char_ids, lengths, width=5)
    w = batch.word_ids
    assert word_ids.tolist() == [[0, 0, w[0, 0], w[0, 1], w[0, 2]], [0, 0, 0, 0, w[1, 0]], [0] * 5]
    assert char_ids.shape == (3, 5, 8)
    assert torch.equal(char_ids[0, 2:, :4], batch.char_ids[0, :3]) and char_ids[0, :, 4:].eq(0).all()
    assert char_ids[0, :2].eq(0).all() and torch.equal(char_ids[1, 4, :4], batch.char_ids[1, 0])
    tags = model.released_tags(batch.tag_ids, lengths, width=5)
    pad, t = model.pad_label, batch.tag_ids
    assert pad == NUM_TAGS
    assert tags.tolist() == [[pad, pad, t[0, 0], t[0, 1], t[0, 2]], [pad] * 4 + [t[1, 0]], [pad] * 5]
    x = torch.randn(3, 3, 7) * batch.word_mask[:, :, None]
    assert torch.equal(left_align(right_align(x, lengths, 6), lengths, 3), x)


def test_words_longer_than_max_word_len_are_an_error():
    model = AuthorsACN(small_config(max_word_len=8))
    batch = make_batch([2], word_len=9)
    with pytest.raises(ValueError, match="max_word_len=8"):
        model.loss(batch)


def test_loss_scores_every_position_including_the_front_pads():
    torch.manual_seed(0)
    model = AuthorsACN(small_config()).eval()
    batch = make_batch([4, 7, 2])
    lengths = batch.word_mask.sum(1)
    with torch.no_grad():
        emissions, _, _ = model.network(*model.released_inputs(batch.word_ids, batch.char_ids, lengths, 10),
                                        batch.region_feats)
        tags = model.released_tags(batch.tag_ids, lengths, 10)
        every = torch.ones(3, 10, dtype=torch.bool)
        by_hand = -model.crf(emissions, tags, mask=every, reduction="mean")
        masked = -model.crf(left_align(emissions, lengths, 7), batch.tag_ids, mask=batch.word_mask,
                            reduction="mean")  # the same emissions, real tokens only, end-padded and masked
        loss = model.loss(batch)
        fewer_pads = AuthorsACN(small_config(max_seq_len=7))
        fewer_pads.load_state_dict(model.state_dict())
        loss_fewer_pads = fewer_pads.eval().loss(batch)
    torch.testing.assert_close(loss, by_hand)
    assert abs(loss - masked) > 1.0            # the pad positions add their own terms
    assert abs(loss - loss_fewer_pads) > 1e-3  # and the real tokens read the leading pads (no masking)


def test_decode_returns_the_real_tokens_tags_each_tweet_in_its_own_width():
    torch.manual_seed(0)
    model = AuthorsACN(small_config()).eval()
    batch = make_batch([4, 13, 0, 10])  # 13 > max_seq_len = 10: decoded in 13 positions, every token scored
    tags = model.decode(batch)
    assert [len(t) for t in tags] == [4, 13, 0, 10]
    assert all(0 <= tag < NUM_TAGS for t in tags for tag in t)  # never the pad label
    for i, n in enumerate([4, 13, 0, 10]):
        width = slice(0, max(n, 1))
        alone = data.Batch(batch.word_ids[i:i + 1, width], batch.char_ids[i:i + 1, width],
                           batch.word_mask[i:i + 1, width], batch.tag_ids[i:i + 1, width],
                           batch.region_feats[i:i + 1], [i])
        assert model.decode(alone) == [tags[i]]  # the other tweets of the batch change nothing
    with torch.no_grad():  # the long tweet: Viterbi over its own 13 right-aligned positions
        lengths = batch.word_mask.sum(1)[1:2]
        emissions, _, _ = model.network(*model.released_inputs(batch.word_ids[1:2], batch.char_ids[1:2], lengths, 13),
                                        batch.region_feats[1:2])
    assert model.crf.decode(emissions, mask=torch.ones(1, 13, dtype=torch.bool))[0] == tags[1]


def test_a_predicted_pad_label_on_a_real_token_reads_as_O():
    model = AuthorsACN(small_config()).eval()
    with torch.no_grad():
        model.emission.weight.zero_()
        model.emission.bias.zero_()
        model.emission.bias[model.pad_label] = 50.0  # every position prefers the pad label
    assert model.decode(make_batch([3, 5])) == [[0, 0, 0], [0] * 5]


def test_attention_maps_in_the_batch_layout_and_the_same_for_every_word():
    """With the concat scores the softmaxes cancel the query terms: α and β are the same for every word, so the
    multimodal vector u_t is the same at every position of a tweet (the released code's behaviour)."""
    torch.manual_seed(0)
    model = AuthorsACN(small_config()).eval()
    with torch.no_grad():  # sharper scores than at initialisation, so that differences would show
        for scores in (model.visual_attention.scores.score, model.textual_attention.scores.score):
            scores.weight.normal_(std=3.0)
        batch = make_batch([6, 3])
        emissions, maps = model(batch)
        lengths = batch.word_mask.sum(1)
        _, alpha, beta = model.network(*model.released_inputs(batch.word_ids, batch.char_ids, lengths, 10),
                                       batch.region_feats)
        h = torch.randn(2, 10, 12)
        attended_regions, _ = model.visual_attention(batch.region_feats, h)
        attended_words, _ = model.textual_attention(h, attended_regions)
        u = model.fusion(attended_regions, attended_words)                  # (2, 10, k)
    assert emissions.shape == (2, 6, NUM_TAGS + 1) and emissions[1, 3:].eq(0).all()
    visual, textual = maps["visual"], maps["textual"]
    assert visual.shape == (2, 6, 49) and textual.shape == (2, 6, 6)
    torch.testing.assert_close(visual[0], alpha[0, 4:])             # real tokens are the last 6 of 10 positions
    torch.testing.assert_close(textual[1, :3, :3], beta[1, 7:, 7:])
    assert visual[1, 3:].eq(0).all() and textual[1, 3:].eq(0).all()
    torch.testing.assert_close(visual[0].sum(-1), torch.ones(6))
    pads_weight = beta[1, 7, :7].sum()                                  # the 7 leading pads are attended too
    assert pads_weight > 0.05
    torch.testing.assert_close(textual[1, 0].sum(), 1 - pads_weight)
    torch.testing.assert_close(alpha[0, 0], alpha[0, 9])
    torch.testing.assert_close(beta[0, 0], beta[0, 9])
    torch.testing.assert_close(u[0, 0], u[0, 9])


def test_the_textual_attention_is_one_vector_per_tweet_as_the_released_formula():
    """β computed once per tweet gives what the released (B, P, P) formula gives, maps and emissions, on a tweet of
    300 words (P = 300) batched with a short one."""
    torch.manual_seed(0)
    model = AuthorsACN(small_config()).eval()
    batch = make_batch([300, 7])
    attention = model.textual_attention

    def released(words, attended_regions):  # every (query t, item j) pair, as multimodal_ner.py builds them
        items = attention.items(words)                                            # (B, P, k)
        beta = torch.softmax(attention.scores(items, attention.query(attended_regions)), dim=-1)  # (B, P, P)
        return beta @ items, beta

    with torch.no_grad():
        emissions, maps = model(batch)
        attention.forward = released
        released_emissions, released_maps = model(batch)
    torch.testing.assert_close(emissions, released_emissions, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(maps["textual"], released_maps["textual"], rtol=1e-5, atol=1e-6)


def test_memory_of_a_long_tweet_grows_linearly(monkeypatch):
    """A tweet of 20,000 words: no tensor of the forward pass grows with P * P (one (P, P) float tensor is 1.6 GB).
    The BiLSTMs, linear in P by construction, are replaced by a linear map of their output width: their Python
    loop over positions is slow under the size check."""
    monkeypatch.setattr(KerasBiLSTM, "forward", lambda self, x: x @ self.input_kernel[0, :, :2 * self.units])
    model = AuthorsACN(small_config()).eval()
    length = 20_000
    batch = make_batch([length])
    with torch.no_grad(), TensorSizeLimit(max_bytes=256 * 4 * length) as limit:  # P * P floats: P / 256 times more
        emissions, maps = model(batch, textual_map=False)
    assert emissions.shape == (1, length, NUM_TAGS + 1) and maps["textual"] is None
    assert limit.largest >= 49 * 4 * length  # α, (P, 49), was seen


@pytest.mark.parametrize("architecture", ["authors", "paper"])
def test_what_the_image_changes_in_the_emissions(architecture):
    """Give a tweet another image and look at how its emission scores move. In the released network u_t is the
    same at every position and enters the emissions linearly, so the image shifts every word's tag scores by one
    and the same vector: it can say which types a tweet holds, not which word is one. In the paper's network the
    filtration gate s_t, computed from h_t, scales the image's part word by word."""
    torch.manual_seed(0)
    model = build_model(small_config(architecture=architecture, hidden_dim=6)).eval()
    batch = make_batch([7])
    other = torch.rand(batch.region_feats.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for parameter in model.parameters():  # larger weights than at initialisation, so that differences show
            parameter.mul_(2.0)
        emissions, _ = model(batch)                                                 # (1, 7, tags)
        batch.region_feats = other
        moved = model(batch)[0] - emissions                                         # (1, 7, tags)
    largest = moved.abs().max()
    assert largest > 1e-3  # the image does reach the emissions
    spread = (moved[0] - moved[0, :1]).abs().max()  # how much the shift differs between the words
    if architecture == "authors":
        assert spread < 1e-4 * largest, moved  # one vector for the whole tweet, up to float rounding
    else:
        assert spread > 0.05 * largest, moved


def test_keras_lstm_equals_the_keras_step_equations():
    """KerasBiLSTM against Keras 1.2's LSTM.step written out per gate, the backward layer reading the reversed
    sequence and its outputs reversed back (Bidirectional, merge_mode='concat')."""
    torch.manual_seed(0)
    lstm = KerasBiLSTM(5, 3)
    x = torch.randn(2, 4, 5)
    expected = []
    for direction, sequence in ((0, x), (1, x.flip(1))):
        W, U, b = lstm.input_kernel[direction], lstm.recurrent_kernel[direction], lstm.bias[direction]
        gates = {name: slice(g * 3, (g + 1) * 3) for g, name in enumerate("ifco")}  # Keras order i, f, c, o
        h, c, out = torch.zeros(2, 3), torch.zeros(2, 3), []
        for t in range(4):
            z = {name: sequence[:, t] @ W[:, s] + b[s] + h @ U[:, s] for name, s in gates.items()}
            i = torch.clamp(0.2 * z["i"] + 0.5, 0, 1)
            f = torch.clamp(0.2 * z["f"] + 0.5, 0, 1)
            o = torch.clamp(0.2 * z["o"] + 0.5, 0, 1)
            c = f * c + i * torch.tanh(z["c"])
            h = o * torch.tanh(c)
            out.append(h)
        out = torch.stack(out, dim=1)
        expected.append(out if direction == 0 else out.flip(1))
    torch.testing.assert_close(lstm(x), torch.cat(expected, dim=-1))


def test_hard_sigmoid_is_theanos():
    x = torch.tensor([-10.0, -2.5, -1.0, 0.0, 0.5, 2.5, 10.0])
    assert hard_sigmoid(x).tolist() == pytest.approx([0.0, 0.0, 0.3, 0.5, 0.6, 1.0, 1.0])


def test_theano_same_padding_keeps_the_length():
    assert [theano_same_padding(k) for k in (2, 3, 4)] == [(1, 0), (1, 1), (2, 1)]
    model = AuthorsACN(default_config())
    assert model.char_cnn(torch.randint(0, NUM_CHARS, (2, 3, 30))).shape == (2, 3, 50)  # 30 -> 15 -> 7 -> 3 (x 32)


def uniform_bound_ok(tensor, bound):
    """Values inside [-bound, bound] and spread like uniform(-bound, bound) (std bound / sqrt(3))."""
    return tensor.abs().max() <= bound and abs(tensor.std().item() / (bound / math.sqrt(3)) - 1) < 0.1


def test_keras_1_2_initialisation():
    torch.manual_seed(0)
    model = AuthorsACN(default_config())
    for lstm, inputs, units in ((model.word_lstm, 200, 200), (model.text_lstm, 450, 200)):
        bias = lstm.bias.view(2, 4, units)
        assert bias[:, 1].eq(1).all() and bias[:, [0, 2, 3]].eq(0).all()  # forget gate 1, the others 0
        for gate in range(4):
            block = slice(gate * units, (gate + 1) * units)
            assert uniform_bound_ok(lstm.input_kernel[:, :, block], math.sqrt(6 / (inputs + units)))
            # Keras 1.2.x LSTM.build initialises U_i..U_o with `init` (glorot_uniform), not inner_init (orthogonal)
            recurrent = lstm.recurrent_kernel[0, :, block]
            assert uniform_bound_ok(recurrent, math.sqrt(6 / (2 * units)))
            assert torch.linalg.svdvals(recurrent).max() > 1.5  # orthogonal x 1.1 would have all of them 1.1
    for conv, (k, channels) in zip(model.char_cnn.convs, ((2, 30), (3, 32), (4, 32))):
        assert uniform_bound_ok(conv.weight, math.sqrt(6 / (channels * 32 * (k + 1)))) and conv.bias.eq(0).all()
    for dense in (model.visual_attention.region_key, model.fusion.fuse, model.emission, model.char_cnn.hidden):
        out_dim, in_dim = dense.weight.shape
        assert uniform_bound_ok(dense.weight, math.sqrt(6 / (in_dim + out_dim))) and dense.bias.eq(0).all()
    assert uniform_bound_ok(model.char_cnn.char_emb.weight, 0.05)  # Embedding init='uniform'; row 0 included
    assert uniform_bound_ok(model.word_emb.weight, 0.25)           # words without a vector, as the released code
    bn = model.char_cnn.batch_norm
    assert bn.weight.eq(1).all() and bn.bias.eq(0).all() and bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01)
    assert model.crf.start_transitions.eq(0).all() and model.crf.end_transitions.eq(0).all()
    assert model.crf.transitions.abs().max() <= math.sqrt(6 / 20) and model.crf.transitions.std() > 0.2


def test_word_vectors_are_copied_row_0_included():
    vectors = torch.randn(NUM_WORDS, 8)
    model = AuthorsACN(small_config(), word_vectors=vectors)
    assert torch.equal(model.word_emb.weight, vectors) and model.word_emb.padding_idx is None


def test_training_a_few_steps_lowers_the_loss():
    torch.manual_seed(0)
    model = AuthorsACN(small_config(char_dropout=0.0))
    batch = make_batch([5, 7, 3])
    # 60 steps: converged (after 30, one tag was still wrong on one CPU and right on another)
    first, last = train_on_batch(model, batch, learning_rate=0.02, steps=60)
    assert last < 0.3 * first
    # still in training mode: batch norm uses this batch's statistics (its running averages, Keras momentum 0.99,
    # are far from them after 30 steps); no dropout in this config
    assert model.decode(batch) == [t[:n] for t, n in zip(batch.tag_ids.tolist(), [5, 7, 3])]


def test_build_model_and_unsupported_options():
    assert type(build_model(small_config(architecture="paper", hidden_dim=8))) is ACN
    assert type(build_model(small_config())) is AuthorsACN
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(small_config(architecture="keras"))
    with pytest.raises(ValueError, match="no text-only variant"):
        AuthorsACN(small_config(use_image=False))
    with pytest.raises(ValueError, match="concat attention only"):
        AuthorsACN(small_config(attention="additive"))
