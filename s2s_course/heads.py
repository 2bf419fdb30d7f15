"""Multi-head attention, chapter 9: the bridge to ``torch.nn.MultiheadAttention``, a timing
helper, and an experiment on whether heads matter.

``torch_multihead_from(mha)`` builds the ``torch.nn.MultiheadAttention`` that computes exactly what
the course's ``MultiHeadAttention`` computes: torch packs the three input projections into one
``in_proj_weight`` of shape (3 D, D), rows [W_Q; W_K; W_V], and calls W_O ``out_proj``.

The *lookup* task: a sequence of T random symbols, and at every position t the model must name
the symbols at several *other* positions at once, each given by its own rule (a relation)::

    previous:  x[(t - 1) mod T]     a diagonal one step below the main one
    mirror:    x[T - 1 - t]         the anti-diagonal
    first:     x[0]                 a column: every position looks at position 0

One attention layer reads the sequence and one linear layer per relation reads the answer off the
layer's output, so everything the readout knows went through the attention. One head returns one
weighted average per position: if it splits its weight between two positions it returns a blend of
two symbols, and a linear readout cannot tell which symbol came from where. h heads return h
averages side by side, so h >= (number of relations) heads can answer every relation exactly.
Whether training finds that solution, and whether each head takes one relation, is measured.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from s2s_course.self_attention import MultiHeadAttention, scaled_dot_product_attention

# --------------------------------------------------------------------------------------------
# The same layer in torch.nn, and how fast each version runs
# --------------------------------------------------------------------------------------------

def torch_multihead_from(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    """A ``torch.nn.MultiheadAttention`` (batch_first) holding copies of ``mha``'s weights."""
    has_bias = mha.W_q.bias is not None
    ref = nn.MultiheadAttention(mha.d_model, mha.num_heads, dropout=mha.dropout, bias=has_bias,
                                batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.W_q.weight, mha.W_k.weight, mha.W_v.weight]))  # (3D, D)
        ref.out_proj.weight.copy_(mha.W_o.weight)
        if has_bias:
            ref.in_proj_bias.copy_(torch.cat([mha.W_q.bias, mha.W_k.bias, mha.W_v.bias]))
            ref.out_proj.bias.copy_(mha.W_o.bias)
    return ref.to(mha.W_q.weight.device)


def time_attention_layers(batch_size: int, T: int, d_model: int, num_heads: int, repeat: int = 7,
                          device: torch.device | str = "cpu") -> dict[str, tuple[float, float]]:
    """Milliseconds (forward, forward + backward) of self-attention on x (B, T, D) for three layers
    with the same weights: the course's manual path, its fused path, and torch.nn.MultiheadAttention.

    Forward: eval mode under ``torch.no_grad()`` (inference; torch.nn may take its fast path).
    Forward + backward: training mode (dropout 0), gradients for the input and every parameter.
    Each time is the median of ``repeat`` runs after two warm-up runs (``benchmark.time_call``)."""
    from s2s_course.benchmark import time_call

    fused = MultiHeadAttention(d_model, num_heads, fused=True).to(device)
    manual = MultiHeadAttention(d_model, num_heads, fused=False).to(device)
    manual.load_state_dict(fused.state_dict())
    layers = {"manual": lambda x: manual(x)[0], "fused": lambda x: fused(x)[0]}
    ref = torch_multihead_from(fused)
    layers["torch.nn"] = lambda x: ref(x, x, x, need_weights=False)[0]
    x = torch.randn(batch_size, T, d_model, device=device)
    times = {}
    for name, layer in layers.items():
        for module in (fused, manual, ref):
            module.eval()
        with torch.no_grad():
            forward = time_call(lambda: layer(x), repeat=repeat, warmup=2, device=device)
        for module in (fused, manual, ref):
            module.train()
        xg = x.clone().requires_grad_(True)
        both = time_call(lambda: layer(xg).sum().backward(), repeat=repeat, warmup=2, device=device)
        times[name] = (1000 * forward, 1000 * both)
    return times


# --------------------------------------------------------------------------------------------
# The lookup task: does a layer need several heads?
# --------------------------------------------------------------------------------------------

RELATIONS: dict[str, Callable[[int], torch.Tensor]] = {
    "previous": lambda T: (torch.arange(T) - 1) % T,    # source position for each t
    "mirror": lambda T: T - 1 - torch.arange(T),
    "first": lambda T: torch.zeros(T, dtype=torch.long),
}


def relation_positions(relations: Sequence[str], T: int) -> torch.Tensor:
    """(R, T) long: row r = the source position relation r reads for every output position t."""
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown or not relations:
        raise ValueError(f"relations must be a non-empty list from {list(RELATIONS)}, got {list(relations)}")
    return torch.stack([RELATIONS[r](T) for r in relations])


def make_lookup_batch(batch_size: int, T: int, vocab_size: int, relations: Sequence[str],
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T) random symbols; y (B, T, R) with y[b, t, r] = x[b, position_r(t)]."""
    x = torch.randint(vocab_size, (batch_size, T), generator=generator)
    where = relation_positions(relations, T)                              # (R, T)
    y = x[:, where.T]                                                     # (B, T, R)
    return x, y


class LookupModel(nn.Module):
    """Token + learned position embeddings -> one MultiHeadAttention -> a linear readout per relation.

    No residual connection: the readout sees only what the attention layer returned.
    """

    def __init__(self, vocab_size: int, T: int, d_model: int, num_heads: int, n_relations: int) -> None:
        super().__init__()
        self.vocab_size, self.n_relations = vocab_size, n_relations
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(0.5 * torch.randn(T, d_model))
        self.attn = MultiHeadAttention(d_model, num_heads)
        self.readout = nn.Linear(d_model, n_relations * vocab_size)

    def forward(self, x: torch.Tensor, head_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T) -> logits (B, T, R, V), weights (B, h, T, T).

        head_mask (h,): multiply each head's output by it before W_O (0 = remove the head)."""
        h = self.embed(x) + self.pos                                      # (B, T, D)
        out, weights = attend_with_head_mask(self.attn, h, head_mask)
        logits = self.readout(out)                                        # (B, T, R * V)
        return logits.view(*x.shape, self.n_relations, self.vocab_size), weights


def attend_with_head_mask(mha: MultiHeadAttention, x: torch.Tensor,
                          head_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of ``mha`` on x (B, T, D), each head's output scaled by head_mask (h,).

    Same parameters and the same result as ``mha(x, need_weights=True)`` when head_mask is None
    or all ones; head_mask[i] = 0 removes head i (an ablation, as in Michel et al. 2019)."""
    q = mha.split_heads(mha.W_q(x))                                       # (B, h, T, d_k)
    k, v = mha.project_kv(x, x)                                           # (B, h, T, d_k)
    out, weights = scaled_dot_product_attention(q, k, v)                  # (B, h, T, d_k)
    if head_mask is not None:
        out = out * head_mask.to(out.dtype).view(1, -1, 1, 1)
    return mha.W_o(mha.merge_heads(out)), weights


def lookup_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position and relation: logits (B, T, R, V), y (B, T, R)."""
    return F.cross_entropy(logits.flatten(0, 2), y.flatten())


@torch.no_grad()
def relation_accuracy(model: LookupModel, x: torch.Tensor, y: torch.Tensor,
                      head_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(R,) share of positions whose symbol is named correctly, per relation."""
    model.eval()
    logits, _ = model(x, head_mask)
    return (logits.argmax(-1) == y).float().mean(dim=(0, 1))


@torch.no_grad()
def head_ablation(model: LookupModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(h, R): accuracy per relation with head i removed (row i); compare with all heads on."""
    h = model.attn.num_heads
    rows = []
    for i in range(h):
        keep = torch.ones(h)
        keep[i] = 0.0
        rows.append(relation_accuracy(model, x, y, keep))
    return torch.stack(rows)


@torch.no_grad()
def relation_weight_share(model: LookupModel, x: torch.Tensor, relations: Sequence[str]) -> torch.Tensor:
    """(h, R): the mean attention weight head i puts on the source position of relation r.

    A head that has specialised in relation r has a share near 1 in column r and near 0 elsewhere;
    a head that splits its weight shows several middling entries."""
    model.eval()
    _, weights = model(x)                                                 # (B, h, T, T)
    where = relation_positions(relations, x.size(1))                      # (R, T)
    t = torch.arange(x.size(1))
    return torch.stack([weights[:, :, t, where[r]].mean(dim=(0, 2)) for r in range(len(relations))], dim=1)


def train_lookup(num_heads: int, *, relations: Sequence[str] = ("previous", "mirror", "first"),
                 T: int = 12, vocab_size: int = 16, d_model: int = 64, steps: int = 1500,
                 batch_size: int = 128, lr: float = 3e-3, seed: int = 0, n_test: int = 2000,
                 log_every: int = 50) -> dict:
    """Train a LookupModel on fresh random batches; return the model, its curve and test accuracy.

    Every step draws a new batch (there is no training set to overfit); the test batch is drawn
    from its own generator, the same for every run with the same ``T`` and ``vocab_size``."""
    torch.manual_seed(seed)
    model = LookupModel(vocab_size, T, d_model, num_heads, len(relations))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(1000 + seed)
    x_test, y_test = make_lookup_batch(n_test, T, vocab_size, relations, torch.Generator().manual_seed(12345))
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        model.train()
        x, y = make_lookup_batch(batch_size, T, vocab_size, relations, g)
        loss = lookup_loss(model(x)[0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            curve.append((step, loss.item()))
    seconds = time.perf_counter() - start
    return dict(model=model, curve=curve, seconds=seconds, num_heads=num_heads, seed=seed,
                accuracy=relation_accuracy(model, x_test, y_test), relations=list(relations),
                test=(x_test, y_test))


__all__ = ["torch_multihead_from", "time_attention_layers", "RELATIONS", "relation_positions", "make_lookup_batch", "LookupModel", "attend_with_head_mask",
           "lookup_loss", "relation_accuracy", "head_ablation", "relation_weight_share",
           "train_lookup"]
