"""Models: the Vision Transformer, BiT ResNets and hybrids, their kernels,
and building one by its variant name (`variants`)."""
from vit_jax.models.variants import get_model
from vit_jax.models.vit import REMAT_POLICIES, VARIANTS, VisionTransformer

__all__ = ["REMAT_POLICIES", "VARIANTS", "VisionTransformer", "get_model"]
