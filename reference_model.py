"""The reference for tests and bench.py: sections 3 and 4 of the model exactly as written, every (word, region) and
(word, word) pair materialised with .repeat() and concatenated, as the existing re-implementation does. Not used
for training."""
import torch

from model import ACN

def literal_coattention(visual_attention, textual_attention, regions, words, word_mask):
    """The "concat" co-attention computed literally. Returns (v̂, α, ĥ, β) as model.py's modules do."""
    B, S, k = words.shape
    R = regions.size(1)
    visual = visual_attention.scores
    regions_rep = regions.unsqueeze(1).repeat(1, S, 1, 1)                          # (B, S, R, k)
    words_rep = words.unsqueeze(2).repeat(1, 1, R, 1)                              # (B, S, R, k)
    z = torch.tanh(torch.cat([visual.item_proj(regions_rep), visual.query_proj(words_rep)], dim=-1))  # (B, S, R, 2k)
    alpha = torch.softmax(visual.score(z).squeeze(-1), dim=-1)                     # (B, S, R)
    attended_regions = alpha @ regions                                             # (B, S, k)

    textual = textual_attention.scores
    items_rep = words.unsqueeze(1).repeat(1, S, 1, 1)                              # (B, S, S, k) item j
    queries_rep = attended_regions.unsqueeze(2).repeat(1, 1, S, 1)                 # (B, S, S, k) query t
    z2 = torch.tanh(torch.cat([textual.item_proj(items_rep), textual.query_proj(queries_rep)], dim=-1))  # (B,S,S,2k)
    scores = textual.score(z2).squeeze(-1).masked_fill(~word_mask[:, None, :], float("-inf"))  # (B, S, S)
    beta = torch.softmax(scores, dim=-1)                                           # (B, S, S)
    return attended_regions, alpha, beta @ words, beta


class LiteralACN(ACN):
    """ACN whose co-attention is computed by literal_coattention (same parameters, same results, slower)."""

    def forward(self, batch, textual_map=True):  # the literal β is (B, S, S) whatever `textual_map` says
        words = self.text_encoder(batch.word_ids, batch.char_ids, batch.word_mask)
        regions = self.region_projection(batch.region_feats)
        attended_regions, alpha, attended_words, beta = literal_coattention(
            self.visual_attention, self.textual_attention, regions, words, batch.word_mask)
        multimodal = self.fusion(attended_regions, attended_words)
        return self.filtration(words, multimodal), {"visual": alpha, "textual": beta}
