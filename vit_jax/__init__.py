"""vit_jax: Vision Transformers pre-trained and fine-tuned with JAX/Flax."""
