"""The mark of the tests that need an NVIDIA GPU, skipped elsewhere.

Run them on a GPU host with the backend the test set-up would otherwise
pin to the CPU: ``JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES=0 pytest -k cudnn_on``.
"""
import jax
import pytest


def _on_a_gpu():
  try:
    return bool(jax.devices('gpu'))
  except RuntimeError:
    return False


needs_a_gpu = pytest.mark.skipif(
    not _on_a_gpu(), reason="cuDNN's kernel runs on an NVIDIA GPU: "
    "JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES=0 pytest -k cudnn_on")
