"""The four special tokens, at the same indices in every vocabulary of the course.

- ``<pad>`` fills short sequences up to the batch length; the loss and attention ignore it.
- ``<sos>`` is the decoder's first input: "start writing".
- ``<eos>`` ends every target, so the model can learn when to stop.
- ``<unk>`` stands for any token the vocabulary does not know.
"""
PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = [PAD, SOS, EOS, UNK]
PAD_IDX, SOS_IDX, EOS_IDX, UNK_IDX = 0, 1, 2, 3
