"""The Transformer encoder-decoder (Vaswani et al. 2017), in the course's seq2seq interface.

    EncoderLayer:  x -> x + SelfAttn(x)         -> x + FFN(x)                  (+ LayerNorm)
    DecoderLayer:  y -> y + MaskedSelfAttn(y)   -> y + CrossAttn(y, memory)   -> y + FFN(y)

Every layer keeps the shape (B, T, d_model), so layers stack. Where the LayerNorm sits:

- post-LN (the paper): x = LN(x + Sublayer(x)); needs a learning-rate warmup to train;
- pre-LN (Xiong et al. 2020): x = x + Sublayer(LN(x)), plus one LN at the end of each stack;
  the residual path stays an identity, and training is stable with little or no warmup.

The model has the same interface as the RNN models (``models/rnn.py``):
``encode(src, src_lengths) -> TransformerState``, ``decode_step(y_prev, state) -> (logits, state)``
with ``state.index_select`` for beam search, and ``forward(src, src_lengths, tgt_in)`` for
training, which runs all target positions at once behind a causal mask. So ``fit``,
``greedy_decode``, ``beam_search`` and ``evaluate_translation`` work unchanged.

``decode_step`` keeps a KV cache: each decoder layer stores the keys and values of the tokens
already written, and the cross-attention keys and values of the source are projected once in
``encode``. With ``use_cache=False`` it recomputes the whole prefix at every step instead
(slower; chapter 11 measures by how much). Both give the same logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from s2s_course.data.specials import PAD_IDX
from s2s_course.models.rnn import check_src
from s2s_course.positional import make_positional
from s2s_course.self_attention import MultiHeadAttention, padding_mask

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values (B, h, S, d_k) each


class FeedForward(nn.Module):
    """Position-wise FFN(x) = W_2 ReLU(W_1 x + b_1) + b_2, the same MLP at every position, eq. (2)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))  # (B, T, D)


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the FFN; each with a residual connection and LN."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1,
                 norm_first: bool = True) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor, need_weights: bool = False,
                causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, S, D), src_mask (B, S) True = real token -> (B, S, D), weights (B, h, S, S).
        ``causal=True`` hides later positions: the layer of a decoder-only model (chapter 12)."""
        if self.norm_first:                                              # pre-LN
            h, w = self.self_attn(self.norm1(x), key_padding_mask=src_mask,
                                  need_weights=need_weights, causal=causal)
            x = x + self.dropout(h)
            x = x + self.dropout(self.ffn(self.norm2(x)))
        else:                                                            # post-LN
            h, w = self.self_attn(x, key_padding_mask=src_mask, need_weights=need_weights,
                                  causal=causal)
            x = self.norm1(x + self.dropout(h))
            x = self.norm2(x + self.dropout(self.ffn(x)))
        return x, w


class DecoderLayer(nn.Module):
    """Masked self-attention over the target so far, cross-attention to the source (queries from
    the decoder, keys and values from the encoder), then the FFN; residuals and LN as above."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1,
                 norm_first: bool = True) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def _self_attn(self, y: torch.Tensor, cache: KV | None, need_weights: bool
                   ) -> tuple[torch.Tensor, KV | None, torch.Tensor | None]:
        """Causal self-attention. With a cache, y holds only the new positions: their keys and
        values are appended to the cached ones, and they attend to everything so far."""
        if cache is None:
            out, w = self.self_attn(y, causal=True, need_weights=need_weights)
            return out, None, w
        k_new, v_new = self.self_attn.project_kv(y, y)                   # (B, h, T, d_k)
        k = torch.cat([cache[0], k_new], dim=2)                          # (B, h, t + T, d_k)
        v = torch.cat([cache[1], v_new], dim=2)
        out, w = self.self_attn(y, kv=(k, v), causal=True, need_weights=need_weights)
        return out, (k, v), w

    def forward(self, y: torch.Tensor, memory_kv: KV, src_mask: torch.Tensor,
                cache: KV | None = None, need_weights: bool = False):
        """y (B, T, D); memory_kv: the source's cross-attention keys/values (B, h, S, d_k);
        src_mask (B, S). Returns y (B, T, D), the updated cache, and the self- and
        cross-attention weights (B, h, T, t) and (B, h, T, S) when ``need_weights``."""
        if self.norm_first:
            h, cache, w_self = self._self_attn(self.norm1(y), cache, need_weights)
            y = y + self.dropout(h)
            h, w_cross = self.cross_attn(self.norm2(y), kv=memory_kv, key_padding_mask=src_mask,
                                         need_weights=need_weights)
            y = y + self.dropout(h)
            y = y + self.dropout(self.ffn(self.norm3(y)))
        else:
            h, cache, w_self = self._self_attn(y, cache, need_weights)
            y = self.norm1(y + self.dropout(h))
            h, w_cross = self.cross_attn(y, kv=memory_kv, key_padding_mask=src_mask,
                                         need_weights=need_weights)
            y = self.norm2(y + self.dropout(h))
            y = self.norm3(y + self.dropout(self.ffn(y)))
        return y, cache, w_self, w_cross


@dataclass
class TransformerState:
    """What ``decode_step`` carries between steps (batch first everywhere).

    memory_kv: per decoder layer, the source's cross-attention keys and values (B, h, S, d_k)
    src_mask:  (B, S) bool, True = real source token
    tokens:    (B, t) the target tokens fed so far (<sos> first)
    cache:     per decoder layer, self-attention keys and values (B, h, t, d_k), or None
               (no cache: recompute the prefix)
    attn:      the last step's cross-attention weights (B, S), last layer, averaged over heads
    """

    memory_kv: list[KV]
    src_mask: torch.Tensor
    tokens: torch.Tensor
    cache: list[KV] | None = None
    attn: torch.Tensor | None = None

    def index_select(self, idx: torch.Tensor) -> TransformerState:
        """Keep (or repeat) the batch entries ``idx`` (N,): beam search follows its survivors."""
        def pick(kv: KV) -> KV:
            return kv[0].index_select(0, idx), kv[1].index_select(0, idx)

        return TransformerState(
            memory_kv=[pick(kv) for kv in self.memory_kv],
            src_mask=self.src_mask.index_select(0, idx), tokens=self.tokens.index_select(0, idx),
            cache=None if self.cache is None else [pick(kv) for kv in self.cache],
            attn=None if self.attn is None else self.attn.index_select(0, idx))

    def cache_bytes(self) -> int:
        """Memory held by the self-attention KV cache (0 without one)."""
        if self.cache is None:
            return 0
        return sum(t.numel() * t.element_size() for kv in self.cache for t in kv)


class Transformer(nn.Module):
    """Embeddings x sqrt(d_model) + positions -> N encoder layers; the same for the decoder;
    a linear layer to the target vocabulary, tied to the target embedding when ``tie``."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 256,
                 num_heads: int = 8, num_encoder_layers: int = 3, num_decoder_layers: int = 3,
                 d_ff: int = 1024, dropout: float = 0.1, norm_first: bool = True,
                 positional: str = "sinusoidal", max_len: int = 1024, tie: str = "decoder",
                 pad_idx: int = PAD_IDX) -> None:
        super().__init__()
        if tie not in ("none", "decoder", "all"):
            raise ValueError(f"tie must be 'none', 'decoder' or 'all', got {tie!r}")
        if tie == "all" and src_vocab_size != tgt_vocab_size:
            raise ValueError(f"tie='all' needs one shared vocabulary, got sizes {src_vocab_size} "
                             f"and {tgt_vocab_size}")
        self.d_model, self.pad_idx, self.norm_first = d_model, pad_idx, norm_first
        self.vocab_size, self.use_cache = tgt_vocab_size, True
        self.src_embedding = nn.Embedding(src_vocab_size, d_model, padding_idx=pad_idx)
        self.tgt_embedding = (self.src_embedding if tie == "all"
                              else nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_idx))
        for emb in dict.fromkeys([self.src_embedding, self.tgt_embedding]):  # in order: reproducible
            nn.init.normal_(emb.weight, std=d_model ** -0.5)  # x sqrt(d) makes them ~unit size
        self.positional = make_positional(positional, d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout, norm_first)
            for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout, norm_first)
            for _ in range(num_decoder_layers))
        # Pre-LN stacks end with a LayerNorm: the residual stream itself is never normalised.
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        if tie != "none":
            self.generator.weight = self.tgt_embedding.weight             # (V, D), shared

    @property
    def src_pad_idx(self) -> int:
        return self.pad_idx

    def embed(self, embedding: nn.Embedding, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """tokens (B, T) -> dropout(emb * sqrt(d_model) + PE[offset:offset+T]) (B, T, D)."""
        x = embedding(tokens) * math.sqrt(self.d_model)
        return self.dropout(self.positional(x, offset))

    # -- encoder ------------------------------------------------------------------------------
    def encode_memory(self, src: torch.Tensor, src_lengths: torch.Tensor,
                      need_weights: bool = False):
        """src (B, S) -> memory (B, S, D), src_mask (B, S), and per-layer self-attention weights."""
        check_src(src, src_lengths)
        src_mask = padding_mask(src_lengths.to(src.device), src.size(1))  # (B, S)
        x = self.embed(self.src_embedding, src)                           # (B, S, D)
        weights = []
        for layer in self.encoder_layers:
            x, w = layer(x, src_mask, need_weights)
            weights.append(w)
        return self.encoder_norm(x), src_mask, weights

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> TransformerState:
        """Read the source once; project each decoder layer's cross-attention keys and values
        once (they do not change while decoding)."""
        memory, src_mask, _ = self.encode_memory(src, src_lengths)
        memory_kv = [layer.cross_attn.project_kv(memory, memory) for layer in self.decoder_layers]
        empty = src.new_zeros(src.size(0), 0)                              # (B, 0): no tokens yet
        cache = [] if self.use_cache else None
        return TransformerState(memory_kv=memory_kv, src_mask=src_mask, tokens=empty, cache=cache)

    # -- decoder ------------------------------------------------------------------------------
    def decode(self, tgt: torch.Tensor, memory_kv: list[KV], src_mask: torch.Tensor,
               cache: list[KV] | None = None, offset: int = 0, need_weights: bool = False):
        """tgt (B, T) at positions offset.. -> decoder output (B, T, D), new cache, weights."""
        y = self.embed(self.tgt_embedding, tgt, offset)                   # (B, T, D)
        new_cache, self_w, cross_w = [], [], []
        for i, layer in enumerate(self.decoder_layers):
            layer_cache = None if cache is None else (cache[i] if cache else _empty_kv(layer, y))
            y, kv, ws, wc = layer(y, memory_kv[i], src_mask, layer_cache, need_weights)
            new_cache.append(kv)
            self_w.append(ws)
            cross_w.append(wc)
        return self.decoder_norm(y), (None if cache is None else new_cache), self_w, cross_w

    def decode_step(self, y_prev: torch.Tensor,
                    state: TransformerState) -> tuple[torch.Tensor, TransformerState]:
        """One target token for every sentence: y_prev (B,) -> logits (B, V), new state.

        With the cache only the new token goes through the decoder; without it the whole
        prefix is recomputed and its last position is read. Same logits either way."""
        tokens = torch.cat([state.tokens, y_prev.unsqueeze(1)], dim=1)   # (B, t + 1)
        if state.cache is not None:
            out, cache, _, cross = self.decode(y_prev.unsqueeze(1), state.memory_kv,
                                               state.src_mask, state.cache,
                                               offset=state.tokens.size(1), need_weights=True)
        else:
            out, cache, _, cross = self.decode(tokens, state.memory_kv, state.src_mask,
                                               need_weights=True)
        logits = self.generator(out[:, -1])                               # (B, V)
        attn = cross[-1][:, :, -1].mean(dim=1)                            # (B, S): heads averaged
        return logits, TransformerState(memory_kv=state.memory_kv, src_mask=state.src_mask,
                                        tokens=tokens, cache=cache, attn=attn)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
                teacher_forcing: float = 1.0, return_attention: bool = False):
        """Logits (B, T, V) for every position of tgt_in (B, T), all at once (teacher forcing:
        the causal mask lets position t see tgt_in[:, :t+1] only). With return_attention=True
        also the last layer's cross-attention averaged over heads (B, T, S)."""
        if teacher_forcing != 1.0:
            raise ValueError("the Transformer trains with teacher forcing (teacher_forcing=1.0): "
                             "its parallel forward needs the whole gold prefix, got "
                             f"{teacher_forcing!r}")
        if tgt_in.dim() != 2 or tgt_in.size(0) != src.size(0):
            raise ValueError(f"tgt_in must be (B, T) with B={src.size(0)}, "
                             f"got shape {tuple(tgt_in.shape)}")
        memory, src_mask, _ = self.encode_memory(src, src_lengths)
        memory_kv = [layer.cross_attn.project_kv(memory, memory) for layer in self.decoder_layers]
        out, _, _, cross = self.decode(tgt_in, memory_kv, src_mask, need_weights=return_attention)
        logits = self.generator(out)                                      # (B, T, V)
        if not return_attention:
            return logits
        return logits, cross[-1].mean(dim=1)                              # (B, T, S)

    @torch.no_grad()
    def attention_maps(self, src: torch.Tensor, src_lengths: torch.Tensor,
                       tgt_in: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Every layer's and head's weights for one teacher-forced pass (eval mode):
        "encoder" (B, h, S, S), "decoder" (B, h, T, T) and "cross" (B, h, T, S) per layer."""
        was_training = self.training
        self.eval()
        memory, src_mask, enc_w = self.encode_memory(src, src_lengths, need_weights=True)
        memory_kv = [layer.cross_attn.project_kv(memory, memory) for layer in self.decoder_layers]
        _, _, dec_w, cross_w = self.decode(tgt_in, memory_kv, src_mask, need_weights=True)
        self.train(was_training)
        return {"encoder": enc_w, "decoder": dec_w, "cross": cross_w}


def _empty_kv(layer: DecoderLayer, y: torch.Tensor) -> KV:
    """A cache with no positions yet, (B, h, 0, d_k)."""
    attn = layer.self_attn
    empty = y.new_zeros(y.size(0), attn.num_heads, 0, attn.d_k)
    return empty, empty


def make_transformer(src_vocab_size: int, tgt_vocab_size: int, d_model: int = 256,
                     num_heads: int = 8, num_layers: int = 3, d_ff: int = 1024,
                     dropout: float = 0.1, norm_first: bool = True,
                     positional: str = "sinusoidal", tie: str = "decoder",
                     max_len: int = 1024) -> Transformer:
    """A ready-made Transformer with ``num_layers`` encoder and decoder layers. The paper's base
    model is d_model=512, num_heads=8, num_layers=6, d_ff=2048, dropout=0.1, norm_first=False."""
    return Transformer(src_vocab_size, tgt_vocab_size, d_model, num_heads, num_layers, num_layers,
                       d_ff, dropout, norm_first, positional, max_len, tie)


__all__ = ["FeedForward", "EncoderLayer", "DecoderLayer", "TransformerState", "Transformer",
           "make_transformer"]
