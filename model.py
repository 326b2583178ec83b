"""The Adaptive Co-attention Network (ACN) for named entity recognition in tweets with images.

Zhang, Fu, Liu, Huang. "Adaptive Co-attention Network for Named Entity Recognition in Tweets". AAAI 2018.
https://ojs.aaai.org/index.php/AAAI/article/view/11962

Read top to bottom, the modules follow the paper: character CNN and BiLSTM (the text encoder), the image regions
projected to the hidden size, word-guided visual attention, image-guided textual attention, gated multimodal
fusion, the filtration gate, and a CRF. Section numbers match the table in docs/model.md.

Shapes: B tweets in a batch, S words (the longest tweet of the batch), C characters (the longest word),
R = 49 image regions, k = hidden size, T = number of tags.

About the attention (section 3-4): the paper scores `w . tanh([W_V v_i ; W_H h_t + b])`. The tanh acts on each half
of the concatenation separately, so the score is a region term plus a word term, and the softmax over regions
cancels the word term. The "concat" attention below computes exactly these scores in factored form: one term per
region, one per word, added by broadcasting into (B, S, R), instead of building the (B, S, R, 2k) tensor. In the
textual attention the same cancellation makes β one vector per tweet, so it is computed once (from the first word's
query) and expanded: prediction costs memory linear in the tweet's length. The "additive" variant,
`w . tanh(W_V v_i + W_H h_t + b)`, lets the word condition the attention; it needs a (B, S, N, k) tensor by
construction, and the textual attention an (S, S) one, so it is computed in chunks of query words whose tensors
hold at most ADDITIVE_CHUNK_ELEMENTS elements: memory linear in S, time still quadratic.

The network of the authors' released Keras code (which produced the paper's numbers and differs from these equations
in several places) is AuthorsACN in model_authors.py; trainer.build_model picks one of the two by
ModelConfig.architecture.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchcrf import CRF


@dataclass
class ModelConfig:
    num_words: int
    num_chars: int
    num_tags: int
    word_emb_dim: int = 200
    char_emb_dim: int = 30
    final_char_dim: int = 50
    kernel_sizes: tuple = (2, 3, 4)
    num_filters: int = 32
    hidden_dim: int = 200
    region_dim: int = 512
    use_image: bool = True
    attention: str = "concat"    # "concat" (the paper's equations) or "additive"
    char_dropout: float = 0.25
    architecture: str = "paper"  # "paper" (ACN, the paper's equations) or "authors" (AuthorsACN, the released code)
    max_seq_len: int = 35        # AuthorsACN only: tweets are right-aligned in max(max_seq_len, S) positions
    max_word_len: int = 30       # AuthorsACN only: characters per word, padded at the end to exactly this


# ----------------------------------------------------------------------------------------------------------------
# 1. Text encoder

class CharCNN(nn.Module):
    """Character-level word representation: char embeddings, convolutions of widths 2/3/4, tanh, max over positions,
    then 96 -> 100 (ReLU, dropout) -> 50 as in the seed PyTorch implementation (the authors' Keras code stacks
    three conv/pool layers instead). Windows start at every real character of the word and read zero (pad)
    embeddings past its end, so a word's representation does not depend on how far the batch pads words; only
    real words go through the CNN (pad words get zeros).

    Computed as one matrix product over the real windows only: each window's characters (the widest kernel's
    number, pads past the word's end) are looked up at once, and the three kernels, zero-padded to the widest,
    are one weight matrix; the max per word and filter runs over its windows (segment_reduce). The Conv1d layers
    hold the weights. The same numbers as the three convolutions over the (words x longest word) grid, whose
    windows were mostly pads, up to float rounding; tests/test_model.py compares both."""

    def __init__(self, num_chars, char_emb_dim, kernel_sizes, num_filters, out_dim, dropout):
        super().__init__()
        self.char_emb = nn.Embedding(num_chars, char_emb_dim, padding_idx=0)  # row 0 stays 0: pads read zeros
        nn.init.uniform_(self.char_emb.weight, -0.25, 0.25)
        with torch.no_grad():
            self.char_emb.weight[0].zero_()
        self.kernel_sizes = tuple(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(char_emb_dim, num_filters, k) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Sequential(nn.Linear(num_filters * len(self.kernel_sizes), 100), nn.ReLU(),
                                     nn.Dropout(dropout), nn.Linear(100, out_dim))

    def window_weights(self):
        """The kernels as one (widest * E, filters of all widths) matrix, each zero-padded to the widest; rows
        position-major (position 0's E channels first), as the windows' embeddings are laid out. And the biases."""
        widest = max(self.kernel_sizes)
        weight = torch.cat([F.pad(conv.weight, (0, widest - k)) for k, conv in zip(self.kernel_sizes, self.convs)])
        return weight.transpose(1, 2).reshape(weight.size(0), -1).t(), torch.cat([conv.bias for conv in self.convs])

    def forward(self, char_ids, word_mask):
        B, S, C = char_ids.shape
        chars = char_ids[word_mask]                                        # (N, C) the N real words only
        char_mask = chars != 0                                             # (N, C)
        widest = max(self.kernel_sizes)
        word, start = char_mask.nonzero(as_tuple=True)                     # (W,) each window, word by word
        window_chars = F.pad(chars, (0, widest - 1))[word[:, None], start[:, None] + torch.arange(
            widest, device=chars.device)]                                  # (W, widest) pads past the word's end
        windows = self.char_emb(window_chars).flatten(1)                  # (W, widest * E)
        weight, bias = self.window_weights()
        scores = torch.tanh(torch.addmm(bias, windows, weight))            # (W, F * kernels)
        pooled = torch.segment_reduce(scores, "max", lengths=char_mask.sum(dim=1), axis=0)  # (N, F * kernels)
        word_feats = self.project(self.dropout(pooled))                    # (N, out_dim)
        out = word_feats.new_zeros(B, S, word_feats.size(-1))              # (B, S, out_dim), 0 at pads
        out[word_mask] = word_feats
        return out


def reverse_each(x, word_mask):
    """Reverse the real words of every tweet in place, leaving pads where they are: (B, S, D) -> (B, S, D)."""
    S = x.size(1)
    positions = torch.arange(S, device=x.device)[None, :]                   # (1, S)
    lengths = word_mask.sum(dim=1, keepdim=True)                             # (B, 1)
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, S) where each slot reads from
    return x.gather(1, source[:, :, None].expand(-1, -1, x.size(2)))         # (B, S, D)


class TextEncoder(nn.Module):
    """x_t = [word_emb_t ; char_rep_t], then a BiLSTM; h_t joins both directions (k/2 each).

    The two directions are two LSTMs over the padded batch: the forward one reads the words in order, the backward
    one reads every tweet reversed (reverse_each). Pads come after the real words in both, so they never reach a
    real word's state; this is the packed-sequence BiLSTM, computed ~1.6x faster on CPU than with packing."""

    def __init__(self, num_words, word_emb_dim, char_cnn, char_dim, hidden_dim, word_vectors=None):
        super().__init__()
        self.word_emb = nn.Embedding(num_words, word_emb_dim, padding_idx=0)
        if word_vectors is not None:
            self.word_emb.weight.data.copy_(word_vectors)
        else:
            nn.init.uniform_(self.word_emb.weight, -0.25, 0.25)
            with torch.no_grad():
                self.word_emb.weight[0].zero_()
        self.char_cnn = char_cnn
        self.forward_lstm = nn.LSTM(word_emb_dim + char_dim, hidden_dim // 2, batch_first=True)
        self.backward_lstm = nn.LSTM(word_emb_dim + char_dim, hidden_dim // 2, batch_first=True)

    def forward(self, word_ids, char_ids, word_mask):
        x = torch.cat([self.word_emb(word_ids), self.char_cnn(char_ids, word_mask)], dim=-1)  # (B, S, word+char dim)
        h_forward = self.forward_lstm(x)[0]                                               # (B, S, k/2)
        h_backward = reverse_each(self.backward_lstm(reverse_each(x, word_mask))[0], word_mask)  # (B, S, k/2)
        return torch.cat([h_forward, h_backward], dim=-1) * word_mask[:, :, None]        # (B, S, k), 0 at pads


# ----------------------------------------------------------------------------------------------------------------
# 2. Image regions: ṽ_i = tanh(W_I v_i + b_I)

class RegionProjection(nn.Module):
    def __init__(self, region_dim, hidden_dim):
        super().__init__()
        self.linear = nn.Linear(region_dim, hidden_dim)

    def forward(self, region_feats):
        return torch.tanh(self.linear(region_feats))  # (B, R, 512) -> (B, R, k)


# ----------------------------------------------------------------------------------------------------------------
# 3-4. The two attentions share one scoring form: items (regions or words) are scored against a query per word.

ADDITIVE_CHUNK_ELEMENTS = 2 ** 22  # the additive attention's (B, c, N, k) tensor per chunk: 16 MB of float32


def query_slices(num_queries, batch_size, num_items, hidden_dim):
    """Slices of the query words, each small enough that the additive attention's (B, c, N, k) tensor holds at most
    ADDITIVE_CHUNK_ELEMENTS elements (at least one word per slice), so memory does not grow with S * S."""
    size = max(1, ADDITIVE_CHUNK_ELEMENTS // (batch_size * num_items * hidden_dim))
    return [slice(start, start + size) for start in range(0, num_queries, size)]


class CoAttentionScore(nn.Module):
    """Scores of every item for every query word, (B, S, N).

    concat:   score_{t,i} = w · tanh([W_item item_i ; W_query query_t + b_query]) + b
                          = w_item · tanh(W_item item_i) + w_query · tanh(W_query query_t + b_query) + b
    additive: score_{t,i} = w · tanh(W_item item_i + W_query query_t + b_query) + b, in chunks of query words
    """

    def __init__(self, hidden_dim, attention):
        super().__init__()
        self.attention = attention
        self.item_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W_V (visual) or W_X (textual)
        self.query_proj = nn.Linear(hidden_dim, hidden_dim)             # W_H, b_H (visual) or W_Q, b_Q (textual)
        width = 2 * hidden_dim if attention == "concat" else hidden_dim
        self.score = nn.Linear(width, 1)                                # w_α, b_α or w_β, b_β

    def forward(self, items, queries):
        k = items.size(-1)
        if self.attention == "concat":
            w_item, w_query = self.score.weight[0, :k], self.score.weight[0, k:]  # the two halves of w
            item_term = torch.tanh(self.item_proj(items)) @ w_item                  # (B, N)
            query_term = torch.tanh(self.query_proj(queries)) @ w_query + self.score.bias  # (B, S)
            return query_term[:, :, None] + item_term[:, None, :]                   # (B, S, N)
        # additive: chunks written into tensors made beforehand (joining a list of pieces interleaves small lasting
        # allocations with the chunks' large passing ones, and the heap grew to 2 GB for a 20,000-word tweet)
        projected_items = self.item_proj(items)[:, None, :, :]                        # (B, 1, N, k)
        scores = items.new_empty(queries.size(0), queries.size(1), items.size(1))     # (B, S, N)
        for part in query_slices(queries.size(1), items.size(0), items.size(1), k):
            hidden = torch.tanh(self.query_proj(queries[:, part])[:, :, None, :] + projected_items)  # (B, c, N, k)
            scores[:, part] = self.score(hidden).squeeze(-1)                          # (B, c, N)
        return scores


class WordGuidedVisualAttention(nn.Module):
    """Section 3: α_{t,i} = softmax_i(score(ṽ_i, h_t)),  v̂_t = Σ_i α_{t,i} ṽ_i.

    concat: the query term is the same for every region, so the softmax cancels it and α_t, hence v̂_t, is the
    same for every word t: computed once per tweet, from the first word's query. Returns v̂ and α with one row per
    tweet (concat, (B, 1, ·)) or per word (additive, (B, S, ·))."""

    def __init__(self, hidden_dim, attention):
        super().__init__()
        self.scores = CoAttentionScore(hidden_dim, attention)

    def forward(self, regions, words):
        queries = words[:, :1] if self.scores.attention == "concat" else words  # (B, 1, k) or (B, S, k)
        alpha = torch.softmax(self.scores(regions, queries), dim=-1)            # (B, 1 or S, R)
        return alpha @ regions, alpha                                           # (B, 1 or S, k), (B, 1 or S, R)


class ImageGuidedTextualAttention(nn.Module):
    """Section 4: β_{t,j} = softmax_j(score(h_j, v̂_t)) over the real words j,  ĥ_t = Σ_j β_{t,j} h_j.

    concat: the query term is the same for every word j, so the softmax cancels it and β_t is one vector for every
    t: computed once, from the first word's query; ĥ is returned as (B, 1, k), one row per tweet, and the map
    expanded (a view, no (S, S) memory). additive: in chunks of query words, each (B, c, S); ĥ is (B, S, k).
    β is (B, S, S), or None when `keep_map` is False."""

    def __init__(self, hidden_dim, attention):
        super().__init__()
        self.scores = CoAttentionScore(hidden_dim, attention)

    def weights(self, words, queries, word_mask):
        scores = self.scores(words, queries)                                  # (B, c, S) query t, item j
        scores = scores.masked_fill(~word_mask[:, None, :], float("-inf"))    # pads are never attended
        return torch.softmax(scores, dim=-1)                                  # (B, c, S)

    def forward(self, words, attended_regions, word_mask, keep_map=True):
        B, S, k = words.shape
        if self.scores.attention == "concat":
            beta = self.weights(words, attended_regions[:, :1], word_mask)    # (B, 1, S) the same for every t
            beta_map = beta.expand(B, S, S) if keep_map else None             # (B, S, S) a view
            return beta @ words, beta_map                                     # (B, 1, k)
        attended = words.new_empty(B, S, k)                                   # (B, S, k) filled chunk by chunk
        beta_map = words.new_empty(B, S, S) if keep_map else None             # (B, S, S)
        for part in query_slices(S, B, S, k):
            beta = self.weights(words, attended_regions[:, part], word_mask)  # (B, c, S)
            attended[:, part] = beta @ words                                  # (B, c, k)
            if keep_map:
                beta_map[:, part] = beta
        return attended, beta_map


# ----------------------------------------------------------------------------------------------------------------
# 5. Gated multimodal fusion

class GatedMultimodalFusion(nn.Module):
    """hv_t = tanh(W_v v̂_t + b_v),  hw_t = tanh(W_w ĥ_t + b_w),  g_t = σ(w_g · [hv_t ; hw_t] + b_g),
    m_t = g_t hv_t + (1 - g_t) hw_t. Per word, or once per tweet when v̂ and ĥ are (concat: (B, 1, k))."""

    def __init__(self, hidden_dim):
        super().__init__()
        self.visual = nn.Linear(hidden_dim, hidden_dim)
        self.textual = nn.Linear(hidden_dim, hidden_dim)
        self.gate = nn.Linear(2 * hidden_dim, 1)

    def forward(self, attended_regions, attended_words):
        hv = torch.tanh(self.visual(attended_regions))                  # (B, S', k), S' = 1 (concat) or S
        hw = torch.tanh(self.textual(attended_words))                   # (B, S', k)
        g = torch.sigmoid(self.gate(torch.cat([hv, hw], dim=-1)))       # (B, S', 1)
        return g * hv + (1 - g) * hw                                    # (B, S', k)


# ----------------------------------------------------------------------------------------------------------------
# 6. Filtration gate and emission scores

class FiltrationGate(nn.Module):
    """s_t = σ(w_s · [W_sh h_t ; W_sm m_t + b_sm] + b_s),  u_t = s_t tanh(W_m m_t + b_m),
    e_t = W_e [h_t ; u_t] + b_e. The paper leaves open how the 2k-d vector becomes a gate; as the seed
    implementation, a linear map w_s to one scalar per word. m is per word (B, S, k), or one row per tweet
    (B, 1, k), which every word of the tweet shares."""

    def __init__(self, hidden_dim, num_tags):
        super().__init__()
        self.text = nn.Linear(hidden_dim, hidden_dim, bias=False)     # W_sh
        self.multimodal = nn.Linear(hidden_dim, hidden_dim)           # W_sm, b_sm
        self.gate = nn.Linear(2 * hidden_dim, 1)                      # w_s, b_s
        self.filtered = nn.Linear(hidden_dim, hidden_dim)             # W_m, b_m
        self.emission = nn.Linear(2 * hidden_dim, num_tags)           # W_e, b_e

    def forward(self, words, multimodal):
        text_part = self.text(words)                                   # (B, S, k)
        multimodal_part = self.multimodal(multimodal).expand_as(text_part)  # (B, S, k) a view when m is per tweet
        s = torch.sigmoid(self.gate(torch.cat([text_part, multimodal_part], dim=-1)))  # (B, S, 1)
        u = s * torch.tanh(self.filtered(multimodal))                  # (B, S, k)
        return self.emission(torch.cat([words, u], dim=-1))           # (B, S, T)


# ----------------------------------------------------------------------------------------------------------------
# The whole network, with 7. the CRF

def refuse_unknown_tags(batch):
    """Training on a gold tag the model does not know (data_loader encodes it -1) would be silent corruption."""
    if (batch.tag_ids[batch.word_mask] < 0).any():
        raise ValueError("a gold tag of this batch is not among the model's tags (encoded -1); train only on tags "
                         "the model was built with")


class ACN(nn.Module):
    def __init__(self, config: ModelConfig, word_vectors=None):
        super().__init__()
        self.config = config
        k = config.hidden_dim
        char_cnn = CharCNN(config.num_chars, config.char_emb_dim, config.kernel_sizes, config.num_filters,
                           config.final_char_dim, config.char_dropout)
        self.text_encoder = TextEncoder(config.num_words, config.word_emb_dim, char_cnn, config.final_char_dim, k,
                                        word_vectors)
        if config.use_image:
            self.region_projection = RegionProjection(config.region_dim, k)
            self.visual_attention = WordGuidedVisualAttention(k, config.attention)
            self.textual_attention = ImageGuidedTextualAttention(k, config.attention)
            self.fusion = GatedMultimodalFusion(k)
            self.filtration = FiltrationGate(k, config.num_tags)
        else:  # the text-only ablation: BiLSTM-CRF with character features
            self.emission = nn.Linear(k, config.num_tags)
        self.crf = CRF(config.num_tags, batch_first=True)

    def forward(self, batch, textual_map=True):
        """Emission scores (B, S, T) and the attention maps (None for the text-only model): "visual" α (B, S, R) and
        "textual" β (B, S, S), None unless `textual_map` (the additive attention would build it in full)."""
        words = self.text_encoder(batch.word_ids, batch.char_ids, batch.word_mask)       # (B, S, k)
        if not self.config.use_image:
            return self.emission(words), None
        regions = self.region_projection(batch.region_feats)                             # (B, R, k)
        # S' = 1 with the concat attention: v̂, ĥ and m are the same for every word (docs/model.md), one row per tweet
        attended_regions, alpha = self.visual_attention(regions, words)                  # (B, S', k), (B, S', R)
        attended_words, beta = self.textual_attention(words, attended_regions, batch.word_mask,
                                                      textual_map)                       # (B, S', k), (B, S, S)
        multimodal = self.fusion(attended_regions, attended_words)                       # (B, S', k)
        alpha = alpha.expand(-1, words.size(1), -1)                                      # (B, S, R) a view
        return self.filtration(words, multimodal), {"visual": alpha, "textual": beta}

    def loss(self, batch):
        """Negative log-likelihood of the gold tags, averaged over the tweets of the batch. A gold tag the model does
        not know (encoded -1) is refused: training on it as if it were another tag would be silent corruption."""
        refuse_unknown_tags(batch)
        emissions, _ = self(batch, textual_map=False)
        return -self.crf(emissions, batch.tag_ids, mask=batch.word_mask, reduction="mean")

    @torch.no_grad()
    def decode(self, batch):
        """Viterbi tag ids for every real token: one list per tweet."""
        emissions, _ = self(batch, textual_map=False)
        return self.crf.decode(emissions, mask=batch.word_mask)
