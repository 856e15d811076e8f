"""Models: the Vision Transformer, its kernels, and building one by name."""
from vit_jax.models.vit import REMAT_POLICIES, VARIANTS, VisionTransformer, get_model

__all__ = ["REMAT_POLICIES", "VARIANTS", "VisionTransformer", "get_model"]
