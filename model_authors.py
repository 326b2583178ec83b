"""The authors' released ACN network (Keras 1.2 on Theano, jinlanfu/NERmultimodal multimodal_ner.py) in PyTorch.

The network that produced the paper's 70.69, layer by layer as `multimodal_ner.py` (__main__, "build model")
builds it, with the inputs `load_data_multimodal.py` (pad_sequence) gives it and the defaults of Keras 1.2.x.
Where this differs from the paper's ACN (model.py), the released code is followed. Sizes, from ModelConfig:
  word_emb_dim (200)  word embedding, and the units per direction of the first BiLSTM (Keras: LSTM(w_emb_dim))
  hidden_dim (200)    units per direction of the second BiLSTM (final_w_emb_dim), so h_t is 2 * hidden_dim = 400-d,
                      and the width of every attention and fusion layer
  char_emb_dim, num_filters, kernel_sizes, final_char_dim, char_dropout, max_word_len: the character CNN
  max_seq_len (35)    every tweet is right-aligned (padded at the front) in P = max(max_seq_len, S) positions
Nothing is masked: the BiLSTMs read the leading pads, the textual attention attends to them, and the CRF tags them
with a pad label of its own (index num_tags, after the real tags).

Keras 1.2.x initialisation, read in the Keras 1.2.0-1.2.2 sources (initializations.py, layers/recurrent.py,
layers/convolutional.py, layers/embeddings.py, layers/normalization.py):
  Dense           glorot_uniform kernel, zero bias
  LSTM            consume_less='cpu' (the default): one (in, u) and one (u, u) matrix per gate, BOTH initialised
                  with `init` = glorot_uniform (LSTM.build passes initializer=self.init for U_i..U_o, so the
                  documented inner_init='orthogonal' is never used in 1.2.x); gate biases zero, forget gate 1
  Convolution1D   glorot_uniform on its (k, 1, in, filters) kernel with Theano fans: fan_in = in * filters,
                  fan_out = k * in * filters, so the bound is sqrt(6 / (in * filters * (k + 1)))
  Embedding       uniform(-0.05, 0.05) (the char embedding; the word embedding gets the word-vector matrix)
  BatchNorm       gamma 1, beta 0, epsilon 1e-3, momentum 0.99 (torch: 0.01)
  ChainCRF        transitions glorot_uniform, start and end energies zero
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchcrf import CRF

from model import ModelConfig, refuse_unknown_tags

KERAS_CHAR_HIDDEN = 100  # Dense(100) between the char CNN's flatten and its 50-d output


def keras_glorot_uniform_(weight, fan_in, fan_out):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def keras_dense(in_dim, out_dim):
    """A Keras 1.2 Dense layer: y = x W + b, W glorot-uniform, b = 0."""
    linear = nn.Linear(in_dim, out_dim)
    keras_glorot_uniform_(linear.weight, in_dim, out_dim)
    nn.init.zeros_(linear.bias)
    return linear


def hard_sigmoid(x):
    """Theano's hard_sigmoid, the default inner_activation of Keras 1.2 LSTMs: clip(0.2 x + 0.5, 0, 1)
    (= torch's hardsigmoid, clip(y / 6 + 1/2, 0, 1), of y = 1.2 x)."""
    return F.hardsigmoid(1.2 * x)


class KerasBiLSTM(nn.Module):
    """Bidirectional(LSTM(units, return_sequences=True)) of Keras 1.2: two LSTMs, the backward one reading the
    sequence from its last position to its first, outputs concatenated [forward ; backward] -> (B, P, 2u).

    Per direction and gate (Keras order i, f, c, o): z = x W + h U + b, i/f/o = hard_sigmoid(z), c' = f c + i tanh(z_c),
    h' = o tanh(c'). One bias per gate (Keras), so the parameter count is Keras' 4 (in u + u u + u) per direction.
    Both directions run in one loop, stacked on a leading axis of 2. Every position is read: no masking."""

    def __init__(self, input_dim, units):
        super().__init__()
        self.units = units
        self.input_kernel = nn.Parameter(torch.empty(2, input_dim, 4 * units))   # W per direction, gates side by side
        self.recurrent_kernel = nn.Parameter(torch.empty(2, units, 4 * units))   # U per direction
        self.bias = nn.Parameter(torch.zeros(2, 4 * units))
        for gate in range(4):
            block = slice(gate * units, (gate + 1) * units)
            keras_glorot_uniform_(self.input_kernel.data[:, :, block], input_dim, units)
            keras_glorot_uniform_(self.recurrent_kernel.data[:, :, block], units, units)  # 1.2: not orthogonal
        with torch.no_grad():
            self.bias[:, units:2 * units] = 1.0                                  # forget_bias_init='one'

    def forward(self, x):
        B, P, _ = x.shape
        both = torch.stack([x, x.flip(1)])                                       # (2, B, P, in) backward reads reversed
        inputs = torch.matmul(both, self.input_kernel[:, None]) + self.bias[:, None, None]  # (2, B, P, 4u) x W + b
        h = x.new_zeros(2, B, self.units)                                        # (2, B, u)
        c = x.new_zeros(2, B, self.units)                                        # (2, B, u)
        outputs = []
        for t in range(P):
            z = torch.baddbmm(inputs[:, :, t], h, self.recurrent_kernel)         # (2, B, 4u) x_t W + b + h U
            i, f, _, o = hard_sigmoid(z).chunk(4, dim=-1)                        # 3 x (2, B, u) one call for all gates
            c = f * c + i * torch.tanh(z[:, :, 2 * self.units:3 * self.units])
            h = o * torch.tanh(c)
            outputs.append(h)
        out = torch.stack(outputs, dim=2)                                        # (2, B, P, u)
        return torch.cat([out[0], out[1].flip(1)], dim=-1)                       # (B, P, 2u) backward back in order


def theano_same_padding(k):
    """(before, after) padding of Keras 1.2's border_mode='same' on Theano: the backend convolves in Theano's 'half'
    mode (k // 2 zeros on both sides) and keeps the first L outputs, so an even width pads one less after the word."""
    return k // 2, k - 1 - k // 2


class AuthorsCharCNN(nn.Module):
    """The released char CNN (multimodal_ner.py, "char level word representation"), for every word position
    including the pad words (all-zero characters): char embedding -> for each width k in (2, 3, 4) in turn:
    Conv1D(32 filters, 'same' as Theano pads it, ReLU) -> max-pool 2 -> dropout -> batch norm over the filters ->
    flatten (30 -> 15 -> 7 -> 3 positions x 32 = 96) -> Dense 100, ReLU -> dropout -> Dense 50."""

    def __init__(self, num_chars, char_emb_dim, kernel_sizes, num_filters, max_word_len, out_dim, dropout):
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        self.char_emb = nn.Embedding(num_chars, char_emb_dim)  # row 0 (pad) is an ordinary trainable row
        nn.init.uniform_(self.char_emb.weight, -0.05, 0.05)
        self.convs = nn.ModuleList()
        positions, in_channels = max_word_len, char_emb_dim
        for k in self.kernel_sizes:
            conv = nn.Conv1d(in_channels, num_filters, k)
            keras_glorot_uniform_(conv.weight, in_channels * num_filters, k * in_channels * num_filters)
            nn.init.zeros_(conv.bias)
            self.convs.append(conv)
            positions, in_channels = positions // 2, num_filters
        if positions < 1:
            raise ValueError(f"max_word_len={max_word_len} is too short for {len(self.kernel_sizes)} max-pools of 2; "
                             f"use at least {2 ** len(self.kernel_sizes)}")
        self.dropout = nn.Dropout(dropout)
        self.batch_norm = nn.BatchNorm1d(num_filters, eps=1e-3, momentum=0.01)  # Keras momentum 0.99
        self.hidden = keras_dense(positions * num_filters, KERAS_CHAR_HIDDEN)
        self.out = keras_dense(KERAS_CHAR_HIDDEN, out_dim)

    def forward(self, char_ids):
        B, P, C = char_ids.shape                                                 # C = max_word_len
        x = self.char_emb(char_ids.reshape(B * P, C)).transpose(1, 2)             # (B*P, E, C) channels first
        for k, conv in zip(self.kernel_sizes, self.convs):
            x = F.relu(conv(F.pad(x, theano_same_padding(k))))                    # (B*P, 32, L) 'same' length
            x = self.dropout(F.max_pool1d(x, 2))                                  # (B*P, 32, L // 2)
        x = self.batch_norm(x)                                                    # (B*P, 32, 3) per filter
        x = x.transpose(1, 2).reshape(B, P, -1)                                   # (B, P, 3 * 32) position-major
        return self.out(self.dropout(F.relu(self.hidden(x))))                     # (B, P, 50)


class AuthorsConcatScore(nn.Module):
    """Keras' merge([first, second], 'concat') -> tanh -> Dense(1) over every (query t, item n) pair:
    score_{t,n} = w · tanh([first ; second]) + c. The tanh acts on each half, so this is
    w_first · tanh(first) + w_second · tanh(second) + c, computed here as a (B, P, 1) + (B, 1, N) sum instead of the
    released code's (B, P, N, 2k) tensor. `items_first` says which half holds the items (the visual attention
    concatenates [regions ; words], the textual one [query ; words])."""

    def __init__(self, hidden_dim, items_first):
        super().__init__()
        self.items_first = items_first
        self.score = keras_dense(2 * hidden_dim, 1)  # w, c

    def forward(self, items, queries):
        k = items.size(-1)
        w_first, w_second = self.score.weight[0, :k], self.score.weight[0, k:]
        w_items, w_queries = (w_first, w_second) if self.items_first else (w_second, w_first)
        item_term = torch.tanh(items) @ w_items                                  # (B, N)
        query_term = torch.tanh(queries) @ w_queries + self.score.bias          # (B, P)
        return query_term[:, :, None] + item_term[:, None, :]                   # (B, P, N)


class AuthorsVisualAttention(nn.Module):
    """Word-guided visual attention on the raw regions v_i (512-d, no tanh projection):
    α_{t,i} = softmax_i(w · tanh([A v_i + a ; B h_t + b]) + c),   v̂_t = Σ_i α_{t,i} (P v_i + p).
    The word term is the same for every region, so the softmax cancels it: α does not depend on the word."""

    def __init__(self, region_dim, word_dim, hidden_dim):
        super().__init__()
        self.region_key = keras_dense(region_dim, hidden_dim)    # A, a
        self.word_query = keras_dense(word_dim, hidden_dim)      # B, b
        self.scores = AuthorsConcatScore(hidden_dim, items_first=True)
        self.region_value = keras_dense(region_dim, hidden_dim)  # P, p

    def forward(self, regions, words):
        scores = self.scores(self.region_key(regions), self.word_query(words))    # (B, P, R)
        alpha = torch.softmax(scores, dim=-1)                                     # (B, P, R)
        return alpha @ self.region_value(regions), alpha                          # (B, P, k), (B, P, R)


class AuthorsTextualAttention(nn.Module):
    """Image-guided textual attention over all P positions, pads included:
    q_t = Q v̂_t + q,  x_j = X h_j + x,  β_{t,j} = softmax_j(w' · tanh([q_t ; x_j]) + c'),  ĥ_t = Σ_j β_{t,j} x_j
    (a sum of the projected words x_j). The query term cancels in the softmax: β depends neither on t nor on the
    image. So β is computed once per tweet, from the first position's query (any would do), and expanded: views of
    (B, P, k) and (B, P, P), memory linear in P."""

    def __init__(self, word_dim, hidden_dim):
        super().__init__()
        self.query = keras_dense(hidden_dim, hidden_dim)  # Q, q
        self.items = keras_dense(word_dim, hidden_dim)    # X, x
        self.scores = AuthorsConcatScore(hidden_dim, items_first=False)

    def forward(self, words, attended_regions):
        B, P, _ = words.shape
        items = self.items(words)                                                 # (B, P, k)
        query = self.query(attended_regions[:, :1])                               # (B, 1, k) its term cancels
        beta = torch.softmax(self.scores(items, query), dim=-1)                   # (B, 1, P) the same for every t
        return (beta @ items).expand(B, P, -1), beta.expand(B, P, P)              # (B, P, k), (B, P, P) views


class AuthorsFusion(nn.Module):
    """Gated fusion, then the filtration gate on the fused vector alone (multimodal_ner.py, "gate -> ..."):
    hv_t = tanh(Wv v̂_t + bv),  hw_t = tanh(Ww ĥ_t + bw),  g_t = σ(wg · (hv_t + hw_t) + bg),
    m_t = M [g_t hv_t ; (1 - g_t) hw_t] + m,  s_t = σ(ws · m_t + bs),  u_t = s_t m_t."""

    def __init__(self, hidden_dim):
        super().__init__()
        self.visual = keras_dense(hidden_dim, hidden_dim)        # Wv, bv
        self.textual = keras_dense(hidden_dim, hidden_dim)       # Ww, bw
        self.gate = keras_dense(hidden_dim, 1)                   # wg, bg
        self.fuse = keras_dense(2 * hidden_dim, hidden_dim)      # M, m
        self.filtration = keras_dense(hidden_dim, 1)             # ws, bs

    def forward(self, attended_regions, attended_words):
        hv = torch.tanh(self.visual(attended_regions))                            # (B, P, k)
        hw = torch.tanh(self.textual(attended_words))                             # (B, P, k)
        g = torch.sigmoid(self.gate(hv + hw))                                     # (B, P, 1)
        m = self.fuse(torch.cat([g * hv, (1 - g) * hw], dim=-1))                  # (B, P, k)
        s = torch.sigmoid(self.filtration(m))                                     # (B, P, 1)
        return s * m                                                              # (B, P, k) u_t


def roll_rows(x, shifts):
    """Shift every row of x (B, P, ...) right by its own amount along dim 1, cyclically:
    out[b, p] = x[b, (p - shifts[b]) mod P]."""
    B, P = x.shape[:2]
    positions = torch.arange(P, device=x.device)[None, :]                        # (1, P)
    source = (positions - shifts[:, None]) % P                                    # (B, P) where each slot reads from
    source = source.view(B, P, *([1] * (x.dim() - 2))).expand(B, P, *x.shape[2:])  # (B, P, ...)
    return x.gather(1, source)


def right_align(x, lengths, width):
    """The Batch layout (B, S, ...) -> the released layout (B, width, ...): each tweet's L real tokens in the last
    L positions, zeros before them (Keras pad_sequences, padding='pre'). Needs S <= width and zeros after the
    real tokens of x, which the Batch guarantees."""
    B, S = x.shape[:2]
    padded = F.pad(x, (0, 0) * (x.dim() - 2) + (0, width - S))                  # (B, width, ...) end-padded
    return roll_rows(padded, width - lengths)                                     # (B, width, ...) front-padded


def left_align(x, lengths, seq_len):
    """The inverse of right_align: (B, P, ...) with the real tokens last -> (B, seq_len, ...) with them first and
    zeros after (the Batch layout)."""
    B, P = x.shape[:2]
    rolled = roll_rows(x, lengths - P)[:, :seq_len]                               # (B, seq_len, ...) real tokens first
    is_real = torch.arange(seq_len, device=x.device)[None, :] < lengths[:, None]  # (B, seq_len)
    return rolled * is_real.view(B, seq_len, *([1] * (x.dim() - 2)))


class AuthorsACN(nn.Module):
    """The authors' released Keras network (jinlanfu/NERmultimodal, multimodal_ner.py), same interface as ACN.

    Inputs are the project's Batch; the model converts them to the released layout itself (`released_inputs`):
    tweets right-aligned in P = max(max_seq_len, S) positions, words' characters padded at the end to max_word_len.
    Tags: 0 .. num_tags - 1 are the data's tags (index 0 is "O", as data_loader.build_vocab orders them); the CRF
    has one more label, `pad_label` = num_tags, the gold tag of every pad position (the released code's label '0').

      w_t  = word_emb(word_t)                                   (word_emb_dim)
      c_t  = AuthorsCharCNN(chars_t)                            (final_char_dim)
      x_t  = BiLSTM_1(w)_t                                      (2 word_emb_dim)   words only
      h_t  = BiLSTM_2([x ; c])_t                                (2 hidden_dim)
      v̂_t, α = AuthorsVisualAttention(v, h)
      ĥ_t, β = AuthorsTextualAttention(h, v̂)
      u_t  = AuthorsFusion(v̂_t, ĥ_t)
      e_t  = E [u_t ; H h_t + hb] + eb                          (num_tags + 1)
      CRF over all P positions, gold pad label at the pads.
    """

    def __init__(self, config: ModelConfig, word_vectors=None):
        super().__init__()
        if not config.use_image:
            raise ValueError("The authors' architecture has no text-only variant; use architecture='paper' with "
                             "use_image=False for the BiLSTM-CRF ablation.")
        if config.attention != "concat":
            raise ValueError(f"The authors' architecture uses the concat attention only, not {config.attention!r}.")
        self.config = config
        self.pad_label = config.num_tags
        k = config.hidden_dim
        self.word_emb = nn.Embedding(config.num_words, config.word_emb_dim)  # row 0 (pad) is an ordinary trainable row
        if word_vectors is not None:
            self.word_emb.weight.data.copy_(word_vectors)
        else:  # the released code gives every word without a vector uniform(-0.25, 0.25)
            nn.init.uniform_(self.word_emb.weight, -0.25, 0.25)
        self.word_lstm = KerasBiLSTM(config.word_emb_dim, config.word_emb_dim)
        self.char_cnn = AuthorsCharCNN(config.num_chars, config.char_emb_dim, config.kernel_sizes, config.num_filters,
                                       config.max_word_len, config.final_char_dim, config.char_dropout)
        self.text_lstm = KerasBiLSTM(2 * config.word_emb_dim + config.final_char_dim, k)
        self.visual_attention = AuthorsVisualAttention(config.region_dim, 2 * k, k)
        self.textual_attention = AuthorsTextualAttention(2 * k, k)
        self.fusion = AuthorsFusion(k)
        self.text_projection = keras_dense(2 * k, k)                 # H, hb
        self.emission = keras_dense(2 * k, config.num_tags + 1)      # E, eb
        self.crf = CRF(config.num_tags + 1, batch_first=True)        # ChainCRF: transitions, start and end energies
        keras_glorot_uniform_(self.crf.transitions, config.num_tags + 1, config.num_tags + 1)
        nn.init.zeros_(self.crf.start_transitions)
        nn.init.zeros_(self.crf.end_transitions)

    def released_inputs(self, word_ids, char_ids, lengths, width):
        """Batch tensors -> the released layout: word ids (B, width) and char ids (B, width, max_word_len), tweets
        right-aligned, characters padded at the end."""
        C, max_word_len = char_ids.size(2), self.config.max_word_len
        if C > max_word_len:
            raise ValueError(f"words of {C} characters in the batch; the authors' char CNN reads exactly "
                             f"max_word_len={max_word_len}. Encode the data with --max_word_len {max_word_len}.")
        char_ids = F.pad(char_ids, (0, max_word_len - C))                        # (B, S, max_word_len)
        return right_align(word_ids, lengths, width), right_align(char_ids, lengths, width)

    def released_tags(self, tag_ids, lengths, width):
        """Gold tags in the released layout (B, width): the data's tags at the real tokens, pad_label before them."""
        aligned = right_align(tag_ids, lengths, width)                           # (B, width)
        is_pad = torch.arange(width, device=tag_ids.device)[None, :] < (width - lengths)[:, None]  # (B, width)
        return aligned.masked_fill(is_pad, self.pad_label)

    def network(self, word_ids, char_ids, region_feats):
        """The released graph on the released layout: emissions (B, P, num_tags + 1), α (B, P, R), β (B, P, P)."""
        words = self.word_lstm(self.word_emb(word_ids))                          # (B, P, 2 word_emb_dim)
        chars = self.char_cnn(char_ids)                                          # (B, P, final_char_dim)
        h = self.text_lstm(torch.cat([words, chars], dim=-1))                    # (B, P, 2k)
        attended_regions, alpha = self.visual_attention(region_feats, h)         # (B, P, k), (B, P, R)
        attended_words, beta = self.textual_attention(h, attended_regions)       # (B, P, k), (B, P, P)
        u = self.fusion(attended_regions, attended_words)                        # (B, P, k)
        emissions = self.emission(torch.cat([u, self.text_projection(h)], dim=-1))  # (B, P, num_tags + 1)
        return emissions, alpha, beta

    def width(self, seq_len):
        """Positions per tweet: max_seq_len, or the longest tweet when longer (evaluation scores every token)."""
        return max(self.config.max_seq_len, seq_len)

    def forward(self, batch, textual_map=True):
        """Emissions (B, S, num_tags + 1) and the attention maps, in the Batch layout: row s of tweet b is its real
        token s, pad rows are zero. "visual" α (B, S, R); "textual" β (B, S, S) over the real tokens only, so a
        row sums to 1 minus the weight the tweet's leading pads received (None unless `textual_map`: it is the one
        (S, S) tensor here)."""
        lengths = batch.word_mask.sum(dim=1)                                      # (B,)
        S, width = batch.word_ids.size(1), self.width(batch.word_ids.size(1))
        emissions, alpha, beta = self.network(*self.released_inputs(batch.word_ids, batch.char_ids, lengths, width),
                                              batch.region_feats)
        if textual_map:
            beta = left_align(beta.transpose(1, 2), lengths, S).transpose(1, 2)  # (B, P, S) items j in Batch layout
        maps = {"visual": left_align(alpha, lengths, S),                         # (B, S, R)
                "textual": left_align(beta, lengths, S) if textual_map else None}  # (B, S, S)
        return left_align(emissions, lengths, S), maps

    def loss(self, batch):
        """CRF negative log-likelihood over all P positions (the pads carry the gold pad label), averaged over the
        tweets of the batch as Keras averages ChainCRF's per-tweet loss. A gold tag the model does not know (-1)
        is refused, as in ACN.loss."""
        refuse_unknown_tags(batch)
        lengths = batch.word_mask.sum(dim=1)                                      # (B,)
        width = self.width(batch.word_ids.size(1))
        emissions, _, _ = self.network(*self.released_inputs(batch.word_ids, batch.char_ids, lengths, width),
                                       batch.region_feats)
        tags = self.released_tags(batch.tag_ids, lengths, width)                 # (B, P)
        return -self.crf(emissions, tags, mask=torch.ones_like(tags, dtype=torch.bool), reduction="mean")

    def decode(self, batch):
        """Viterbi tag ids for every real token, as `decode_released`, with a pad label predicted on a real token
        read as "O" (index 0); the released ner_evaluate.get_chunks would count it as a chunk of type '0' instead."""
        return [[0 if tag == self.pad_label else tag for tag in tags] for tags in self.decode_released(batch)]

    @torch.no_grad()
    def decode_released(self, batch):
        """Viterbi tag ids for every real token: one list per tweet (its last L positions of the released layout),
        the pad label (`pad_label`) included where it is predicted on a real token.

        Each tweet is decoded in its own width max(max_seq_len, L), so the result does not depend on the other
        tweets of the batch (in eval mode)."""
        lengths = batch.word_mask.sum(dim=1)                                      # (B,)
        widths = lengths.clamp(min=self.config.max_seq_len)                       # (B,) per-tweet width
        tags = [None] * len(lengths)
        for width in widths.unique().tolist():
            rows = (widths == width).nonzero().flatten()                          # the tweets decoded in this width
            S = min(batch.word_ids.size(1), width)                                # their real tokens lie in [:S]
            word_ids, char_ids = self.released_inputs(batch.word_ids[rows, :S], batch.char_ids[rows, :S],
                                                      lengths[rows], width)
            emissions, _, _ = self.network(word_ids, char_ids, batch.region_feats[rows])
            every_position = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)  # (b, P)
            for row, path in zip(rows.tolist(), self.crf.decode(emissions, mask=every_position)):
                real = path[width - lengths[row].item():]
                tags[row] = real
        return tags

