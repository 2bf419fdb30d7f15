"""Sequence-to-sequence models. All of them share one interface (``EncoderDecoder``):
``encode(src, src_lengths) -> state``, ``decode_step(y_prev, state) -> (logits, state)``,
``forward(src, src_lengths, tgt_in, teacher_forcing=1.0, return_attention=False)``."""
from s2s_course.models.attention_rnn import (AttnSeq2Seq, BahdanauDecoder, LuongDecoder,
                                             make_attention_seq2seq)
from s2s_course.models.rnn import (Bridge, Decoder, DecoderState, Encoder, EncoderDecoder, Seq2Seq,
                                   count_parameters, make_rnn_seq2seq)

__all__ = ["AttnSeq2Seq", "BahdanauDecoder", "Bridge", "Decoder", "DecoderState", "Encoder",
           "EncoderDecoder", "LuongDecoder", "Seq2Seq", "count_parameters",
           "make_attention_seq2seq", "make_rnn_seq2seq"]
