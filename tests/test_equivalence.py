"""The faster computations of the paper's model against the ones they replaced (the code before issue 20): the
char CNN's matrix product over real windows against the three convolutions over the padded grid, and one whole
training step (loss, and the gradient of every parameter) against the model as it was: the convolution char CNN,
and the co-attention, fusion and filtration computed for every word (reference_model.LiteralACN), not once per
tweet."""
import pytest
import torch
import torch.nn.functional as F

import data_loader as data
import model as paper_model
from conftest import random_examples
from model import CharCNN, ModelConfig
from reference_model import LiteralACN


def grid_char_cnn(cnn, char_ids, word_mask):
    """CharCNN as it was: three convolutions over every (word, position) of the padded grid, masked, max."""
    B, S, C = char_ids.shape
    chars = char_ids[word_mask]
    char_mask = chars != 0
    embedded = cnn.char_emb(chars).transpose(1, 2)
    pooled = []
    for k, conv in zip(cnn.kernel_sizes, cnn.convs):
        windows = torch.tanh(conv(F.pad(embedded, (0, k - 1))))
        pooled.append(windows.masked_fill(~char_mask[:, None, :], float("-inf")).amax(dim=2))
    word_feats = cnn.project(cnn.dropout(torch.cat(pooled, dim=1)))
    out = word_feats.new_zeros(B, S, word_feats.size(-1))
    out[word_mask] = word_feats
    return out


def close_to_scale(value, expected, tolerance, atol=0.0):
    """Every entry within `tolerance` times the largest entry of `expected` (sums run in another order), plus
    `atol` (for a gradient that is 0 up to rounding, as the attention's word term, which its softmax cancels)."""
    return (value - expected).abs().max() <= tolerance * expected.abs().max() + atol


def char_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (4, 9), generator=generator)  # words of 1 to 11 characters
    chars = torch.randint(1, 40, (4, 9, 11), generator=generator)
    chars[torch.arange(11)[None, None, :] >= lengths[:, :, None]] = 0
    word_mask = torch.arange(9)[None, :] < torch.tensor([[9], [5], [1], [7]])
    return chars * word_mask[:, :, None], word_mask


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_char_cnn_equals_the_convolutions_over_the_padded_grid(dtype, tolerance):
    torch.manual_seed(0)
    cnn = CharCNN(40, 30, (2, 3, 4), 32, 50, dropout=0.0).to(dtype)
    chars, word_mask = char_batch()
    weights = torch.randn(4, 9, 50, dtype=dtype)
    results = []
    for forward in (cnn, lambda c, m: grid_char_cnn(cnn, c, m)):
        cnn.zero_grad()
        out = forward(chars, word_mask)
        (out * weights).sum().backward()
        results.append([out.detach()] + [p.grad.clone() for p in cnn.parameters()])
    for value, expected in zip(*results):
        assert close_to_scale(value, expected, tolerance)


def batch_of(lengths, num_words, num_chars, num_tags, word_len=7):
    examples, features = random_examples(lengths, word_len, 0, num_words, num_chars, num_tags)
    return data.collate(examples, features)


class GridCharCNN(CharCNN):
    def forward(self, char_ids, word_mask):
        return grid_char_cnn(self, char_ids, word_mask)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_a_training_step_equals_the_replaced_implementation(dropout, monkeypatch):
    """Loss and every parameter's gradient of one training step (float32, the default sizes, dropout off, and on
    with the same random numbers), from the same weights: within 1e-4 of the largest entry of each tensor plus
    1e-8 (the gradients that are 0 but for rounding, ~1e-9, differ by as much as they are)."""
    config = ModelConfig(num_words=60, num_chars=40, num_tags=9, char_dropout=dropout)
    batch = batch_of([12, 7, 3, 9], 60, 40, 9)
    torch.manual_seed(0)
    fast = paper_model.ACN(config)
    with monkeypatch.context() as patch:
        patch.setattr(paper_model, "CharCNN", GridCharCNN)
        reference = LiteralACN(config)
    reference.load_state_dict(fast.state_dict())
    assert isinstance(reference.text_encoder.char_cnn, GridCharCNN)
    results = []
    for model in (fast, reference):
        model.train()
        torch.manual_seed(1)  # the same dropout masks: both draw them in the same order
        loss = model.loss(batch)
        loss.backward()
        results.append([loss.detach()] + [p.grad for p in model.parameters()])
    names = ["loss"] + [name for name, _ in fast.named_parameters()]
    for name, value, expected in zip(names, *results):
        if expected is None:  # a query-side weight of the concat attention: its term is cancelled by the softmax
            assert value is None or value.abs().max() <= 1e-8, name
        else:
            assert close_to_scale(value, expected, 1e-4, atol=1e-8), name
