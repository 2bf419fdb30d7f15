"""Data for the course: tokenizers, vocabularies, synthetic tasks, batching and real corpora.

The path from text to a model input, one module per step:

    tokenize.py   "Ein Mann läuft."   -> ["ein", "mann", "läuft", "."]
    vocab.py      ["ein", "mann", ...] -> [1, 57, 203, ..., 2]
    batching.py   many id lists        -> Batch(src (B, S), tgt (B, T), lengths, masks)

``synthetic.py`` makes toy tasks (copy, reverse, sort, dates); ``corpora.py`` loads Multi30k
(German-English) and Tatoeba (Korean-English) through ``download.py``.
"""
from s2s_course.data.batching import (Batch, BucketBatchSampler, Seq2SeqDataset, TokenBatchSampler,
                                      collate_batch, lengths_to_mask, make_loader, pad_sequences)
from s2s_course.data.corpora import load_multi30k, load_tatoeba_kor_eng, tatoeba_attribution, tatoeba_credits
from s2s_course.data.download import DataUnavailableError, fetch
from s2s_course.data.specials import (EOS, EOS_IDX, PAD, PAD_IDX, SOS, SOS_IDX, SPECIALS, UNK,
                                      UNK_IDX)
from s2s_course.data.synthetic import DATE_FORMATS, TASKS, make_task, task_vocabs
from s2s_course.data.tokenize import SPACE_TOKEN, TOKENIZERS, get_tokenizer
from s2s_course.data.vocab import Vocab, build_vocab_from_iterator

__all__ = [
    # specials
    "PAD", "SOS", "EOS", "UNK", "SPECIALS", "PAD_IDX", "SOS_IDX", "EOS_IDX", "UNK_IDX",
    # tokenize / vocab
    "get_tokenizer", "TOKENIZERS", "SPACE_TOKEN", "Vocab", "build_vocab_from_iterator",
    # synthetic tasks
    "TASKS", "DATE_FORMATS", "make_task", "task_vocabs",
    # batching
    "Batch", "Seq2SeqDataset", "collate_batch", "pad_sequences", "lengths_to_mask",
    "BucketBatchSampler", "TokenBatchSampler", "make_loader",
    # real corpora
    "DataUnavailableError", "fetch", "load_multi30k", "load_tatoeba_kor_eng", "tatoeba_attribution", "tatoeba_credits",
]
