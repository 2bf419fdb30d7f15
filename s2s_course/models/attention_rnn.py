"""RNN encoder-decoders with attention: Bahdanau et al. 2014 and Luong et al. 2015.

Without attention the decoder sees the source only through one fixed vector. With attention it
looks back at *every* encoder output at every step and builds a fresh context c_t from them.

- ``BahdanauDecoder``: attend with the *previous* state s_{t-1}, then feed [emb; c_t] to the RNN.
- ``LuongDecoder``: run the RNN first, attend with the *new* state h_t, then combine
  h~_t = tanh(W_c [c_t; h_t]). With input feeding, h~_t is also fed to the next step's RNN.

Both use the same encoder (usually bidirectional) and the same ``EncoderDecoder`` interface as the
plain models in ``models/rnn.py``, so training and decoding code does not change.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from s2s_course.attention import AdditiveScore, Attention, LocalAttention, make_score
from s2s_course.models.rnn import (Bridge, DecoderState, Encoder, EncoderDecoder, Hidden, make_rnn,
                                   top_layer)

KINDS = ("bahdanau", "luong")


class BahdanauDecoder(nn.Module):
    """One step of the Bahdanau decoder (Bahdanau et al. 2014, Section 3.1 and appendix A).

    c_t = Attention(query=s_{t-1}, keys=encoder outputs)   additive score, eq. (5)-(6)
    s_t = RNN([emb(y_{t-1}); c_t], s_{t-1})
    logits = W_o [s_t; c_t; emb(y_{t-1})]                   eq. (4), without the maxout layer
    """

    def __init__(self, vocab_size: int, emb_dim: int, hidden_dim: int, memory_dim: int,
                 attn_dim: int | None = None, cell: str = "gru", dropout: float = 0.0,
                 num_layers: int = 1) -> None:
        super().__init__()
        attn_dim = hidden_dim if attn_dim is None else attn_dim
        self.cell, self.num_layers = cell, num_layers
        self.vocab_size, self.hidden_dim, self.memory_dim = vocab_size, hidden_dim, memory_dim
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.dropout = nn.Dropout(dropout)
        self.attention = Attention(AdditiveScore(hidden_dim, memory_dim, attn_dim))
        self.rnn = make_rnn(cell, emb_dim + memory_dim, hidden_dim, num_layers, dropout)
        self.out = nn.Linear(hidden_dim + memory_dim + emb_dim, vocab_size)

    def init_state(self, hidden: Hidden, memory: torch.Tensor,
                   src_mask: torch.Tensor) -> DecoderState:
        """U k_j is the same at every step: project the keys once, here, for the whole sentence."""
        return DecoderState(hidden=hidden, memory=memory, src_mask=src_mask,
                            keys=self.attention.project_keys(memory))

    def forward(self, y_prev: torch.Tensor,
                state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """y_prev (B,) -> logits (B, V), new state (its ``attn`` holds this step's weights)."""
        emb = self.dropout(self.embedding(y_prev))                           # (B, E)
        query = top_layer(state.hidden)                                      # (B, H): s_{t-1}
        # Attend with the previous state: context c_t (B, Hm) and weights (B, S).
        context, weights = self.attention(query, state.memory, mask=state.src_mask,
                                          projected_keys=state.keys)
        rnn_input = torch.cat([emb, context], dim=-1)                        # (B, E + Hm)
        output, hidden = self.rnn(rnn_input.unsqueeze(1), state.hidden)      # (B, 1, H)
        output = output.squeeze(1)                                           # (B, H): s_t
        logits = self.out(torch.cat([output, context, emb], dim=-1))         # (B, V)
        new_state = DecoderState(hidden=hidden, memory=state.memory, src_mask=state.src_mask,
                                 attn=weights, keys=state.keys, step=state.step + 1)
        return logits, new_state


class LuongDecoder(nn.Module):
    """One step of the Luong decoder (Luong et al. 2015, Sections 3.1-3.3).

    h_t  = RNN([emb(y_{t-1}); h~_{t-1}], h_{t-1})   (h~_{t-1} only with input feeding, Section 3.3)
    c_t  = Attention(query=h_t, keys=encoder outputs)  score "dot" | "general" | "concat", eq. (8);
           local=D switches to local-p attention with window D, eq. (9)-(10);
           with monotonic=True to local-m (the window sits at the output step t)
    h~_t = tanh(W_c [c_t; h_t])                        eq. (5)
    logits = W_s h~_t                                  eq. (6)
    """

    def __init__(self, vocab_size: int, emb_dim: int, hidden_dim: int, memory_dim: int,
                 score: str = "general", input_feeding: bool = True, local: int | None = None,
                 cell: str = "gru", dropout: float = 0.0, num_layers: int = 1,
                 monotonic: bool = False) -> None:
        super().__init__()
        self.cell, self.num_layers, self.input_feeding = cell, num_layers, input_feeding
        self.vocab_size, self.hidden_dim, self.memory_dim = vocab_size, hidden_dim, memory_dim
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.dropout = nn.Dropout(dropout)
        rnn_input_dim = emb_dim + hidden_dim if input_feeding else emb_dim
        self.rnn = make_rnn(cell, rnn_input_dim, hidden_dim, num_layers, dropout)
        score_fn = make_score(score, hidden_dim, memory_dim)
        if local is None:
            self.attention = Attention(score_fn)
        else:
            self.attention = LocalAttention(score_fn, hidden_dim, window=local, monotonic=monotonic)
        self.W_c = nn.Linear(memory_dim + hidden_dim, hidden_dim, bias=False)
        self.W_s = nn.Linear(hidden_dim, vocab_size)

    def init_state(self, hidden: Hidden, memory: torch.Tensor,
                   src_mask: torch.Tensor) -> DecoderState:
        """With input feeding the first h~_0 is zeros."""
        feed = None
        if self.input_feeding:
            feed = memory.new_zeros(memory.size(0), self.hidden_dim)          # (B, H)
        return DecoderState(hidden=hidden, memory=memory, src_mask=src_mask, feed=feed,
                            keys=self.attention.project_keys(memory))  # once per sentence

    def forward(self, y_prev: torch.Tensor,
                state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """y_prev (B,) -> logits (B, V), new state (``feed`` = h~_t, ``attn`` = this step's
        weights)."""
        emb = self.dropout(self.embedding(y_prev))                           # (B, E)
        rnn_input = torch.cat([emb, state.feed], dim=-1) if self.input_feeding else emb
        output, hidden = self.rnn(rnn_input.unsqueeze(1), state.hidden)      # (B, 1, H)
        h_t = output.squeeze(1)                                              # (B, H)
        # Attend with the new state: context c_t (B, Hm) and weights (B, S).
        context, weights = self.attention(h_t, state.memory, mask=state.src_mask,
                                          projected_keys=state.keys, step=state.step)
        h_tilde = torch.tanh(self.W_c(torch.cat([context, h_t], dim=-1)))    # (B, H), eq. (5)
        logits = self.W_s(self.dropout(h_tilde))                             # (B, V), eq. (6)
        new_state = DecoderState(hidden=hidden, memory=state.memory, src_mask=state.src_mask,
                                 feed=h_tilde if self.input_feeding else None, attn=weights,
                                 keys=state.keys, step=state.step + 1)
        return logits, new_state


class AttnSeq2Seq(EncoderDecoder):
    """Encoder + attention decoder. The encoder's final state goes through a ``Bridge`` tanh(W h)
    to start the decoder (Bahdanau et al. use the backward state: s_0 = tanh(W_s h<-_1)); its
    outputs are the memory the decoder attends over, with padding masked out."""

    def __init__(self, encoder: Encoder, decoder: BahdanauDecoder | LuongDecoder) -> None:
        super().__init__()
        if decoder.memory_dim != encoder.output_dim:
            raise ValueError(f"decoder.memory_dim must equal encoder.output_dim "
                             f"({encoder.output_dim}), got {decoder.memory_dim}")
        if decoder.num_layers != encoder.num_layers or decoder.cell != encoder.cell:
            raise ValueError("encoder and decoder need the same cell and num_layers, got "
                             f"{encoder.cell}/{encoder.num_layers} and "
                             f"{decoder.cell}/{decoder.num_layers}")
        self.encoder, self.decoder = encoder, decoder
        self.bridge = Bridge(encoder.output_dim, decoder.hidden_dim)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> DecoderState:
        """Read the source; return the decoder's first state with the memory to attend over."""
        memory, final = self.encoder(src, src_lengths)                     # (B, S, Hm), (L, B, He)
        positions = torch.arange(src.size(1), device=src.device)           # (S,)
        src_mask = positions.unsqueeze(0) < src_lengths.to(src.device).unsqueeze(1)  # (B, S)
        return self.decoder.init_state(self.bridge(final), memory, src_mask)


def make_attention_seq2seq(src_vocab_size: int, tgt_vocab_size: int, kind: str = "bahdanau",
                           score: str = "general", input_feeding: bool = True, emb_dim: int = 64,
                           hidden_dim: int = 128, cell: str = "gru", bidirectional: bool = True,
                           dropout: float = 0.0, local_window: int | None = None,
                           num_layers: int = 1, local_mode: str = "p") -> AttnSeq2Seq:
    """A ready-made attention model. ``score``, ``input_feeding`` and ``local_window`` are Luong's;
    ``local_mode`` "p" (predicted position) or "m" (monotonic: the window follows the step).

    A bidirectional encoder gets hidden_dim // 2 units per direction, so its outputs have
    hidden_dim features like the decoder state, and every score (even "dot") fits.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if bidirectional and hidden_dim % 2:
        raise ValueError(f"hidden_dim must be even with a bidirectional encoder, got {hidden_dim}")
    if local_mode not in ("p", "m"):
        raise ValueError(f"local_mode must be 'p' or 'm', got {local_mode!r}")
    if kind == "bahdanau" and local_window is not None:
        raise ValueError("local_window is for kind='luong' (local-p attention), "
                         "got kind='bahdanau'")
    encoder_dim = hidden_dim // 2 if bidirectional else hidden_dim
    encoder = Encoder(src_vocab_size, emb_dim, encoder_dim, num_layers, cell, dropout,
                      bidirectional)
    if kind == "bahdanau":
        decoder = BahdanauDecoder(tgt_vocab_size, emb_dim, hidden_dim, encoder.output_dim,
                                  cell=cell, dropout=dropout, num_layers=num_layers)
    else:
        decoder = LuongDecoder(tgt_vocab_size, emb_dim, hidden_dim, encoder.output_dim, score=score,
                               input_feeding=input_feeding, local=local_window, cell=cell,
                               dropout=dropout, num_layers=num_layers, monotonic=local_mode == "m")
    return AttnSeq2Seq(encoder, decoder)
