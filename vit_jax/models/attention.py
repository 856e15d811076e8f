"""Scaled dot-product attention, in the implementation each backend runs best.

Queries, keys and values come as (batch, tokens, heads, head_dim), the
layout of the checkpoint's projection kernels, and the result goes back in
that layout. Logits and softmax are computed in float32 whatever the input
dtype.

- ``cudnn``: ``jax.nn.dot_product_attention(..., implementation='cudnn')``,
  cuDNN's fused (flash) kernel, which never writes the (tokens x tokens)
  weights to memory. It takes bfloat16 or float16 inputs and a head_dim that
  is a multiple of 8, on an NVIDIA GPU. Under autodiff JAX refuses it an
  odd token count (a ViT's class token makes 197 at 224 px), so a training
  step pads the tokens to an even count: by one masked token around each
  attention call (``token_padding='per_attention'``), or once, before the
  first block, with the pad masked in every block (``'once'``); see
  `pads_once` and ``_cudnn_attention``.
- ``dot_product_attention``: ``jax.nn.dot_product_attention`` as JAX picks
  by default, which is XLA's own lowering on every backend: JAX does not
  choose cuDNN unless asked.
- ``head_major``: einsums in (batch, heads, tokens, head_dim) layout with a
  hand-written backward pass. XLA:CPU runs batched matmuls fastest when the
  batch dimensions lead; in the token-major layout it copies and transposes
  around every matmul and its autodiff backward, so attention took a far
  larger share of a train step than of its FLOPs. What this layout saves is
  in docs/benchmarks.md, measured with ``scripts/benchmark.py
  --against=model.attention_implementation=dot_product_attention``.

``auto`` picks ``head_major`` when JAX's default backend is the CPU,
``cudnn`` on a GPU for bfloat16 or float16 compute, and
``dot_product_attention`` otherwise. Where cuDNN refuses half-precision
inputs too (an odd head_dim, no cuDNN), ``auto`` falls back to
``dot_product_attention`` and logs cuDNN's reason once per shape; a
``cudnn`` asked for by name is an error instead.
"""
import functools

from absl import logging
import jax
import jax.numpy as jnp

from vit_jax.models import implementations

IMPLEMENTATIONS = ('auto', 'cudnn', 'dot_product_attention', 'head_major')
# How a training step gives cuDNN the even token count it needs (`pads_once`).
TOKEN_PADDINGS = ('per_attention', 'once')
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)  # cuDNN's fused kernel has no float32


def resolve(implementation: str) -> str:
  """The concrete implementation that ``implementation`` stands for."""
  return implementations.resolve(
      'attention_implementation', implementation, IMPLEMENTATIONS,
      on_cpu='head_major', on_gpu='cudnn', elsewhere='dot_product_attention')


def pads_once(token_padding: str, implementation: str) -> bool:
  """Whether a training step's encoder pads an odd token count once, up front.

  ``'once'``: the encoder appends one zero token before the first block and
  cuts it off after the last; every block's attention masks it as a key
  (``valid_tokens``), and nothing else mixes tokens, so the real tokens'
  values and gradients are the unpadded ones. That is one pad and one slice
  a step where ``'per_attention'`` makes cuDNN's attention pad and slice
  around every call (and their gradients), at the cost of computing the
  blocks' dense layers on one more token; inference is not padded, as JAX
  accepts an odd count for cuDNN's forward pass. ``head_major`` attention
  cannot mask and needs no padding, so there ``'once'`` pads nothing either.
  ``'per_attention'`` stays the default until a GPU measures ``'once'``
  (docs/benchmarks.md).
  """
  if token_padding not in TOKEN_PADDINGS:
    raise ValueError(f'unknown token_padding {token_padding!r}; '
                     f'valid: {", ".join(TOKEN_PADDINGS)}')
  return token_padding == 'once' and resolve(implementation) != 'head_major'


def attention(q, k, v, *, implementation: str = 'auto', valid_tokens: int | None = None,
              pad_per_call: bool = True):
  """softmax(q k^T / sqrt(head_dim)) v over (batch, tokens, heads, head_dim).

  ``valid_tokens``: where the encoder padded the tokens (`pads_once`), how
  many are real; the rest are masked out as keys. ``pad_per_call``: whether
  cuDNN pads an odd count itself (``token_padding='per_attention'``).
  """
  chosen = resolve(implementation)
  lengths = (None if valid_tokens is None
             else jnp.full((q.shape[0],), valid_tokens, jnp.int32))
  if chosen == 'head_major':
    if lengths is not None:
      raise ValueError("attention_implementation 'head_major' cannot mask padded tokens")
    to_head_major = lambda x: jnp.swapaxes(x, 1, 2)
    out = _head_major_attention(*map(to_head_major, (q, k, v)))
    return to_head_major(out)
  # `auto` leaves float32 to XLA's attention without asking cuDNN.
  if chosen == 'cudnn' and (implementation == 'cudnn' or q.dtype in _CUDNN_DTYPES):
    return _cudnn_or_fallback(q, k, v, lengths, pad_per_call=pad_per_call,
                              fall_back=implementation == 'auto')
  return _xla_attention(q, k, v, lengths)


def _xla_attention(q, k, v, lengths):
  """XLA's attention, with the tokens past ``lengths`` masked (None: none)."""
  return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths,
                                      key_value_seq_lengths=lengths)


def _cudnn_or_fallback(q, k, v, lengths, *, pad_per_call: bool, fall_back: bool):
  """cuDNN's fused attention; where it refuses, XLA's if ``fall_back``.

  JAX checks cuDNN's limits (dtype, head_dim, the library's presence) while
  tracing, so a refusal is an exception here, before anything is compiled.
  """
  try:
    return _cudnn_attention(q, k, v, lengths, pad_per_call=pad_per_call)
  except (NotImplementedError, RuntimeError) as refusal:
    if not fall_back:
      raise ValueError(
          f"attention_implementation 'cudnn' cannot run q, k, v of shape "
          f"{q.shape} and dtype {q.dtype}: {refusal} (cuDNN's fused attention "
          f"needs an NVIDIA GPU, bfloat16 or float16 compute (model.dtype) and a "
          f"head_dim that is a multiple of 8; 'auto' falls back to "
          f"'dot_product_attention' where it cannot)") from refusal
    _warn_once(f"cuDNN's fused attention refused q of shape {q.shape} and dtype "
               f"{q.dtype} ({refusal}); running XLA's attention "
               f"(dot_product_attention) instead.")
    return _xla_attention(q, k, v, lengths)


def _cudnn_attention(q, k, v, lengths, *, pad_per_call: bool):
  """cuDNN's kernel; with ``pad_per_call``, an odd token count padded to even.

  JAX (0.10, 0.11) refuses odd sequence lengths for cuDNN under autodiff:
  its forward rule tests the placeholder it passes for "no bias" as if it were
  a bias, and cuDNN's backward pass with a bias needs even lengths. So every
  ViT train step at 224 px (197 tokens) fell back to XLA's attention. Padded
  per call, one zero token is appended to q, k and v and masked out by
  sequence lengths (cuDNN's padding mask, no logits materialised), and its
  output row is cut off again; its gradients are zero. ``lengths`` (the
  encoder's padding, `pads_once`) masks the same way without a copy.
  """
  tokens = q.shape[1]
  if lengths is not None or tokens % 2 == 0 or not pad_per_call:
    return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths,
                                        key_value_seq_lengths=lengths,
                                        implementation='cudnn')
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)))
  lengths = jnp.full((q.shape[0],), tokens, jnp.int32)
  out = jax.nn.dot_product_attention(
      pad(q), pad(k), pad(v), query_seq_lengths=lengths,
      key_value_seq_lengths=lengths, implementation='cudnn')
  return out[:, :tokens]


@functools.cache
def _warn_once(message: str):
  """Logs ``message`` the first time only: every block of every trace repeats it."""
  logging.warning(message)


def _forward(q, k, v):
  """Attention over (batch, heads, tokens, head_dim), with what backward needs."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum('bhqd,bhkd->bhqk', q * scale, k,
                      preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('bhqk,bhkd->bhqd', probs.astype(v.dtype), v)
  return out, (q, k, v, probs, out)


def _backward(residuals, d_out):
  """Gradients of `_forward`, with each matmul in the form XLA:CPU runs fast.

  With P = softmax(S), S = scale * q k^T and O = P v:
    dv = P^T dO,  dP = dO v^T,  dS = P * (dP - rowsum(dO * O)),
    dq = scale * dS k,  dk = scale * dS^T q.
  rowsum(dO * O) equals rowsum(dP * P) but sums head_dim terms, not tokens.
  The transposed products are taken as (dO^T P)^T and (q^T dS)^T: a
  contraction over the leading token axis of P or dS is what XLA:CPU does
  slowly (docs/benchmarks.md).
  """
  q, k, v, probs, out = residuals
  scale = q.shape[-1] ** -0.5
  d_v = jnp.einsum('bhqd,bhqk->bhdk', d_out, probs.astype(d_out.dtype))
  d_probs = jnp.einsum('bhqd,bhkd->bhqk', d_out, v,
                       preferred_element_type=jnp.float32)
  row_dot = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32),
                    axis=-1, keepdims=True)
  d_logits = (probs * (d_probs - row_dot)).astype(q.dtype)
  d_q = jnp.einsum('bhqk,bhkd->bhqd', d_logits, k) * scale
  d_k = jnp.einsum('bhqd,bhqk->bhdk', q * scale, d_logits)
  return d_q, jnp.swapaxes(d_k, -1, -2), jnp.swapaxes(d_v, -1, -2)


@jax.custom_vjp
def _head_major_attention(q, k, v):
  return _forward(q, k, v)[0]


_head_major_attention.defvjp(_forward, _backward)
