"""Multi-head self-attention → onnxruntime's ``com.microsoft::Attention`` (rule ``ort-attention``).

The rule is anchored on the Reshape that closes an exported self-attention block and walks back::

    x ─┬─ MatMul(Wq) [+ bq] [*c] ─ Reshape[B,S,N,d] [*c] ─ Transpose(0,2,1,3) [*c] ─┐
       ├─ MatMul(Wk) [+ bk] [*c] ─ Reshape[B,S,N,d] [*c] ─ Transpose(0,2,3,1) [*c] ─┴ MatMul
       │                                                         [Mul|Div by c]* ─┘
       │                                         [Where(causal tril slice, ., fill)]
       │                                                [Add(., additive mask)]
       │                                                     Softmax(last axis)
       └─ MatMul(Wv) [+ bv] ─ Reshape[B,S,N,d] ─ Transpose(0,2,1,3) ─ MatMul(probs, .)
                                         Transpose(0,2,1,3) ─ Reshape[B,S,H] (anchor)

and replaces it with ``Attention(x, concat(Wq,Wk,Wv), concat(bq,bk,bv), mask_index)`` with
``num_heads``, ``scale`` (only when it is not 1/sqrt(d)), ``unidirectional`` and
``mask_filter_value``. Transposes may come as a chain whose composition is the expected perm.

Projections: a MatMul with a constant 2-D weight and an optional constant bias Add (either
operand order), or one packed projection split into q, k, v: a MatMul [+ Add] or GPT-2's Conv1D
(``Reshape(x,[-1,H]) → Gemm → Reshape[B,S,3H]``) followed by a Split (or three Slices) on the last
axis. ``c`` is a scalar constant (BART-style scaling of q, split sqrt scaling of q and k, or the
usual scaling of the scores); their product becomes the ``scale`` attribute.

What is checked (each refusal raises :class:`MatchFailed` with the reason):

* weights, biases and scales are constants; the dtype is float32 or float16;
* the perms; the Softmax axis is the last one;
* every Reshape target evaluates, by a small symbolic evaluation of the integer shape subgraph
  (Shape, Gather, Unsqueeze, Concat, Slice, arithmetic) in which ``B`` and ``S`` are the first two
  dims of ``x``, to exactly ``[B, S, N, d]`` or ``[B, S, H]`` (``0`` and one ``-1`` allowed);
  ``N`` and ``d`` are read from these targets;
* the mask (below). A mask form that is not recognized is refused, never approximated.

Masks, added to the scaled scores, recognized with every constant checked:

* **transformers >= 4.48 ("vmap") masks**: ``Where(cond, 0, fill)`` with ``cond`` an ``And`` tree
  (optionally under an ``Expand``) of: all-true constants, ``q_idx >= 0`` (always true),
  ``kv_idx <= q_idx`` (causal), and the padding lookup
  ``Gather(Flatten(Cast(mask, bool)), b_idx * mask.shape[1] + kv_idx)`` reshaped to the index
  shape, where the ``*_idx`` are ``Range(0, n, 1)`` unsqueezed onto axis 0 (batch), 2 (query) and
  3 (key). → ``mask_index = Cast(Cast(mask, bool), int32)`` (one Cast shared by all layers) and,
  with the causal leaf, ``unidirectional=1``.
* **classic additive masks** ``(1 - Cast(mask[:, None, None, :])) * fill``. → ``mask_index =
  Cast(mask, int32)``.
* **classic causal masks** (older GPT-2): ``Where(Slice(tril buffer)[..., :S, :S], scores,
  fill)`` with the buffer a constant lower-triangular matrix and the slice provably starting at
  ``[0, 0]``. → ``unidirectional=1``.

``fill`` must be a constant at most -1e4 and becomes ``mask_filter_value``, so that the fused op
fills masked scores exactly as the model does.

Equivalence guaranteed (beyond the float rounding of a different summation order):

* no mask, and the vmap form: the same outputs for every input on which the original model runs,
  with ``attention_mask`` of shape ``[batch, sequence]`` (onnxruntime rejects other shapes); any
  nonzero mask value means "attend", as in the model's Cast to bool. Fully masked rows (a batch
  whose mask is all zeros, or padding query positions under left padding with a causal mask) give
  the model's result too, because the fill value is the model's.
* classic additive mask: the same outputs for masks of 0s and 1s (other values make
  ``(1 - m) * fill`` something other than a mask; onnxruntime treats ``m > 0`` as attend).
* classic causal mask with a padding mask: rows whose every causally visible key is padding
  (padding query positions under left padding) may differ; all other positions are the same.

Not checked (assumed, as written by every exporter we know): that the ``Range`` lengths of the
vmap mask's batch, query and causal key indices are the batch size and sequence length of ``x``
(they come from ``Shape`` of the hidden states, which this rule cannot relate to ``x`` across
layers; the padding key index is checked against the mask's own length), and that an ``Expand``
in the mask chain only broadcasts to the scores' shape.

Reshape targets computed from intermediate values of the pattern (GPT-2 reads ``Shape`` of the
split q/k/v and of the transposed context) are taken into the match when they only feed the
pattern, so that the engine's "intermediate value read outside the match" check passes.

The match runs in stages, one module each; every stage is a function that returns a typed
partial match or raises :class:`~onnxforge.rules.MatchFailed` with its reason:

* :mod:`.context` -- anchor Reshape ← Transpose ← MatMul(probs, v) ← Softmax (:class:`Context`);
* :mod:`.heads` and :mod:`.projections` -- each of V, Q and K: Transposes, scalar factors and the
  head Reshape (:class:`Head`), back to its projection (:class:`Projection`);
* :mod:`.scores` and :mod:`.masks` -- Softmax input ← mask Add ← causal Where ← scalings ← Q·K
  MatMul (:class:`Scores` with a :class:`MaskSpec`);
* :mod:`.shapes` -- the Reshape targets, evaluated with :mod:`.shape_ints` (``N`` and ``d``);
* :mod:`.rule` -- :class:`AttentionFusion`, which runs the stages in that order (the first
  failure is the reason ``--explain`` shows), checks the dtypes and builds the fused op.
"""

from onnxforge.passes.fusion.attention.context import Context
from onnxforge.passes.fusion.attention.heads import Head
from onnxforge.passes.fusion.attention.masks import MaskSpec
from onnxforge.passes.fusion.attention.projections import Projection
from onnxforge.passes.fusion.attention.rule import AttentionFusion, AttentionMatch
from onnxforge.passes.fusion.attention.scores import Scores

__all__ = ["AttentionFusion", "AttentionMatch", "Context", "Head", "MaskSpec", "Projection", "Scores"]
