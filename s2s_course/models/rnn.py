"""The RNN encoder-decoder, without attention.

The encoder reads the source sentence into vectors; the decoder writes the target one token at a
time, each step conditioned on the tokens written so far and on what the encoder produced. Two
classic ways to connect them:

- mode="sutskever" (Sutskever et al. 2014, Section 2): the encoder's final state *is* the decoder's
  first state, and nothing else is fed. Everything the decoder knows about the source must survive
  inside that one state. (They also reversed the source sentence: do that in the data if you want.)
- mode="cho" (Cho et al. 2014, Section 2.2): the encoder's final state is a summary c of the
  source. The decoder starts from h_0 = tanh(W c) (appendix A.1.1) and is *given c again at every
  step*: h_t = f(h_{t-1}, y_{t-1}, c) and p(y_t | ...) = g(h_t, y_{t-1}, c).

Every seq2seq model of the course has the same interface (``EncoderDecoder``):
``encode(src, src_lengths) -> state``, ``decode_step(y_prev, state) -> (logits, state)`` and
``forward(src, src_lengths, tgt_in, teacher_forcing)`` which loops ``decode_step`` over the target.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s_course.data.specials import PAD_IDX

CELLS = ("gru", "lstm")
MODES = ("cho", "sutskever")

# An RNN state: a GRU has one tensor (L, B, H); an LSTM has a pair (h, c) of them.
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# The decoder's state: everything it carries from one step to the next
# --------------------------------------------------------------------------------------------

@dataclass
class DecoderState:
    """What the decoder needs between steps. Batch-first, except ``hidden`` (L, B, H) as in torch.

    hidden:   the RNN state, (L, B, H) or an LSTM pair (h, c)
    memory:   encoder outputs to attend over (B, S, Hm), attention models only
    src_mask: (B, S) bool, True = real source token, attention models only
    context:  the fixed source summary c (B, Hc), Cho et al. only
    feed:     the previous attentional vector h~_{t-1} (B, H), Luong input feeding only
    attn:     the last attention weights (B, S), for plotting
    keys:     the score's key projection (B, S, A), computed once per sentence, attention only
    step:     how many output steps have been taken (Luong local-m looks at source position step)
    """

    hidden: Hidden
    memory: torch.Tensor | None = None
    src_mask: torch.Tensor | None = None
    context: torch.Tensor | None = None
    feed: torch.Tensor | None = None
    attn: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    step: int = 0

    def index_select(self, idx: torch.Tensor) -> DecoderState:
        """Keep (or repeat) the batch entries ``idx`` (N,) of every field. Beam search uses this to
        follow the surviving hypotheses. ``hidden``'s batch dimension is 1, the others' is 0."""
        if isinstance(self.hidden, tuple):
            hidden = tuple(h.index_select(1, idx) for h in self.hidden)
        else:
            hidden = self.hidden.index_select(1, idx)

        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.index_select(0, idx)

        return DecoderState(hidden=hidden, memory=pick(self.memory), src_mask=pick(self.src_mask),
                            context=pick(self.context), feed=pick(self.feed), attn=pick(self.attn),
                            keys=pick(self.keys), step=self.step)


# --------------------------------------------------------------------------------------------
# Small helpers shared by the encoder and the decoders
# --------------------------------------------------------------------------------------------

def make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
             dropout: float = 0.0, bidirectional: bool = False) -> nn.Module:
    """A batch-first nn.GRU or nn.LSTM. Dropout sits between stacked layers, so only if L > 1."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    rnn_class = nn.GRU if cell == "gru" else nn.LSTM
    return rnn_class(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                     dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)


def top_layer(hidden: Hidden) -> torch.Tensor:
    """The last layer's hidden state (B, H): the decoder's "current state" s_t. For an LSTM, h."""
    h = hidden[0] if isinstance(hidden, tuple) else hidden
    return h[-1]


def check_src(src: torch.Tensor, src_lengths: torch.Tensor) -> None:
    """src must be (B, S) int64 and src_lengths (B,) with every length in [1, S]."""
    if src.dim() != 2 or src.dtype != torch.long:
        raise ValueError(f"src must be (B, S) int64, got shape {tuple(src.shape)} {src.dtype}")
    B, S = src.shape
    if src_lengths.shape != (B,):
        raise ValueError(f"src_lengths must be ({B},), got shape {tuple(src_lengths.shape)}")
    lengths = src_lengths.cpu()
    if bool((lengths < 1).any()) or bool((lengths > S).any()):
        raise ValueError(f"src_lengths must lie in [1, {S}], got {lengths.tolist()}")


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Embed the source tokens and run an RNN over them.

    Returns every position's output (B, S, H*dirs), used by attention, and the final state
    (L, B, H*dirs), used to start the decoder. A bidirectional encoder concatenates, per layer,
    the forward state (after the last real token) and the backward state (after the first token).

    Padding is skipped with pack_padded_sequence, so a sentence encodes to the same vectors alone
    or padded inside a batch; outputs at padded positions are 0.
    """

    def __init__(self, vocab_size: int, emb_dim: int, hidden_dim: int, num_layers: int = 1,
                 cell: str = "gru", dropout: float = 0.0, bidirectional: bool = False,
                 pad_idx: int = PAD_IDX) -> None:
        super().__init__()
        self.cell, self.num_layers, self.bidirectional = cell, num_layers, bidirectional
        self.pad_idx = pad_idx
        self.num_directions = 2 if bidirectional else 1
        self.output_dim = hidden_dim * self.num_directions
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
        self.dropout = nn.Dropout(dropout)
        self.rnn = make_rnn(cell, emb_dim, hidden_dim, num_layers, dropout, bidirectional)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, Hidden]:
        check_src(src, src_lengths)
        embedded = self.dropout(self.embedding(src))                  # (B, S, E)
        # Packing tells the RNN each sentence's true length, so it never reads the padding.
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        packed_outputs, final = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True,
                                         total_length=src.size(1))    # (B, S, H*dirs)
        if isinstance(final, tuple):                                  # LSTM: (h, c)
            final = (self._merge_directions(final[0]), self._merge_directions(final[1]))
        else:
            final = self._merge_directions(final)
        return outputs, final                                         # final: (L, B, H*dirs)

    def _merge_directions(self, state: torch.Tensor) -> torch.Tensor:
        """torch returns (L*dirs, B, H) ordered layer by layer; make it (L, B, dirs*H)."""
        L, D = self.num_layers, self.num_directions
        _, B, H = state.shape
        state = state.view(L, D, B, H).permute(0, 2, 1, 3)            # (L, B, dirs, H)
        return state.reshape(L, B, D * H)                             # [forward; backward]


# --------------------------------------------------------------------------------------------
# Decoder (Cho or Sutskever)
# --------------------------------------------------------------------------------------------

class Decoder(nn.Module):
    """One decoder step: previous token + state -> logits over the target vocabulary + new state.

    mode="sutskever": h_t = RNN(emb(y_{t-1}), h_{t-1});        logits = W_o h_t
    mode="cho":       h_t = RNN([emb(y_{t-1}); c], h_{t-1});   logits = W_o [h_t; emb(y_{t-1}); c]
                      and the first state is h_0 = tanh(W c)  (Cho et al. 2014, Section 2.2, A.1.1)
    """

    def __init__(self, vocab_size: int, emb_dim: int, hidden_dim: int, context_dim: int,
                 num_layers: int = 1, cell: str = "gru", dropout: float = 0.0,
                 mode: str = "cho") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.cell, self.num_layers = mode, cell, num_layers
        self.vocab_size, self.hidden_dim, self.context_dim = vocab_size, hidden_dim, context_dim
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.dropout = nn.Dropout(dropout)
        if mode == "cho":
            self.init_hidden = nn.Linear(context_dim, num_layers * hidden_dim)   # h_0 = tanh(W c)
            self.rnn = make_rnn(cell, emb_dim + context_dim, hidden_dim, num_layers, dropout)
            self.out = nn.Linear(hidden_dim + emb_dim + context_dim, vocab_size)
        else:
            self.rnn = make_rnn(cell, emb_dim, hidden_dim, num_layers, dropout)
            self.out = nn.Linear(hidden_dim, vocab_size)

    def init_state(self, context: torch.Tensor) -> DecoderState:
        """Cho et al.: the first state h_0 = tanh(W c), one slice per layer; c is kept for later."""
        B = context.size(0)
        h0 = torch.tanh(self.init_hidden(context))                          # (B, L*H)
        h0 = h0.view(B, self.num_layers, self.hidden_dim).transpose(0, 1).contiguous()  # (L, B, H)
        hidden = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
        return DecoderState(hidden=hidden, context=context)

    def forward(self, y_prev: torch.Tensor,
                state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """y_prev (B,) previous tokens -> logits (B, V) and the new state."""
        emb = self.dropout(self.embedding(y_prev))                          # (B, E)
        if self.mode == "cho":
            rnn_input = torch.cat([emb, state.context], dim=-1)             # (B, E + C)
        else:
            rnn_input = emb                                                 # (B, E)
        output, hidden = self.rnn(rnn_input.unsqueeze(1), state.hidden)     # (B, 1, H)
        output = output.squeeze(1)                                          # (B, H)
        if self.mode == "cho":
            logits = self.out(torch.cat([output, emb, state.context], dim=-1))
        else:
            logits = self.out(output)                                       # (B, V)
        return logits, replace(state, hidden=hidden)


class Bridge(nn.Module):
    """Map the encoder's final state (L, B, He) to the decoder's size (L, B, Hd): tanh(W h).

    Needed when the sizes differ, e.g. a bidirectional encoder whose [forward; backward] state is
    twice as wide. For an LSTM the same map is applied to h and to c.
    """

    def __init__(self, encoder_dim: int, decoder_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(encoder_dim, decoder_dim)

    def forward(self, final: Hidden) -> Hidden:
        if isinstance(final, tuple):
            return (torch.tanh(self.linear(final[0])), torch.tanh(self.linear(final[1])))
        return torch.tanh(self.linear(final))                               # (L, B, Hd)


# --------------------------------------------------------------------------------------------
# The shared interface, and the plain RNN seq2seq model
# --------------------------------------------------------------------------------------------

def next_inputs(gold: torch.Tensor, logits: torch.Tensor, teacher_forcing: float) -> torch.Tensor:
    """Teacher forcing: feed the gold token with probability ``teacher_forcing``, else the model's
    own best guess (argmax of the previous logits), chosen independently for every example.
    Only 0 < teacher_forcing < 1 draws random numbers."""
    if teacher_forcing >= 1.0:
        return gold
    predicted = logits.argmax(dim=-1)                                       # (B,)
    if teacher_forcing <= 0.0:
        return predicted
    use_gold = torch.rand(gold.shape, device=gold.device) < teacher_forcing  # (B,) one coin each
    return torch.where(use_gold, gold, predicted)


class EncoderDecoder(nn.Module):
    """The interface of every seq2seq model: subclasses build ``encoder``/``decoder`` and
    implement ``encode``; ``decode_step`` and the training loop ``forward`` are shared."""

    encoder: nn.Module
    decoder: nn.Module

    @property
    def src_pad_idx(self) -> int:
        return self.encoder.pad_idx

    @property
    def vocab_size(self) -> int:
        """Size of the target vocabulary (the logits' last dimension)."""
        return self.decoder.vocab_size

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> DecoderState:
        raise NotImplementedError

    def decode_step(self, y_prev: torch.Tensor,
                    state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One target token: y_prev (B,) -> logits (B, V), new state."""
        return self.decoder(y_prev, state)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
                teacher_forcing: float = 1.0, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for every position of tgt_in (B, T) = [<sos> y_1 ... y_{T-1}].

        Step 0 reads tgt_in[:, 0] (<sos>); step t reads the gold tgt_in[:, t] with probability
        ``teacher_forcing``, else the model's previous prediction. With return_attention=True also
        returns the attention weights (B, T, S), or None for a model without attention.
        """
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing!r}")
        if tgt_in.dim() != 2 or tgt_in.size(0) != src.size(0):
            raise ValueError(f"tgt_in must be (B, T) with B={src.size(0)}, "
                             f"got shape {tuple(tgt_in.shape)}")
        state = self.encode(src, src_lengths)
        all_logits, all_attn = [], []
        y_prev = tgt_in[:, 0]                                               # (B,) <sos>
        for t in range(tgt_in.size(1)):
            if t > 0:
                y_prev = next_inputs(tgt_in[:, t], all_logits[-1], teacher_forcing)
            logits, state = self.decode_step(y_prev, state)                # (B, V)
            all_logits.append(logits)
            all_attn.append(state.attn)
        logits = torch.stack(all_logits, dim=1)                             # (B, T, V)
        if not return_attention:
            return logits
        attn = None if all_attn[0] is None else torch.stack(all_attn, dim=1)  # (B, T, S)
        return logits, attn


class Seq2Seq(EncoderDecoder):
    """Encoder + Decoder without attention (Cho et al. 2014 or Sutskever et al. 2014).

    Sutskever mode hands the encoder's final state to the decoder as it is when the sizes allow;
    a bidirectional encoder, or one of another width, goes through a ``Bridge`` tanh(W h).
    """

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.bridge: Bridge | None = None
        if decoder.mode == "cho":
            if decoder.context_dim != encoder.output_dim:
                raise ValueError(f"decoder.context_dim must equal encoder.output_dim "
                                 f"({encoder.output_dim}), got {decoder.context_dim}")
            return
        if decoder.num_layers != encoder.num_layers or decoder.cell != encoder.cell:
            raise ValueError("mode='sutskever' needs the same cell and num_layers in encoder and "
                             f"decoder, got {encoder.cell}/{encoder.num_layers} and "
                             f"{decoder.cell}/{decoder.num_layers}")
        if encoder.bidirectional or encoder.output_dim != decoder.hidden_dim:
            self.bridge = Bridge(encoder.output_dim, decoder.hidden_dim)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> DecoderState:
        """Read the source; return the decoder's first state."""
        _, final = self.encoder(src, src_lengths)          # (L, B, He) or LSTM (h, c)
        if self.decoder.mode == "cho":
            context = top_layer(final)                      # (B, He): c, a summary of the source
            return self.decoder.init_state(context)
        hidden = final if self.bridge is None else self.bridge(final)
        return DecoderState(hidden=hidden)                  # Sutskever: nothing else is passed on


def make_rnn_seq2seq(src_vocab_size: int, tgt_vocab_size: int, emb_dim: int = 64,
                     hidden_dim: int = 128, cell: str = "gru", mode: str = "cho",
                     num_layers: int = 1, dropout: float = 0.0,
                     bidirectional: bool = False) -> Seq2Seq:
    """A ready-made Seq2Seq. The encoder has hidden_dim units per direction; the decoder too."""
    encoder = Encoder(src_vocab_size, emb_dim, hidden_dim, num_layers, cell, dropout, bidirectional)
    decoder = Decoder(tgt_vocab_size, emb_dim, hidden_dim, context_dim=encoder.output_dim,
                      num_layers=num_layers, cell=cell, dropout=dropout, mode=mode)
    return Seq2Seq(encoder, decoder)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
