r"""Writes tests/models/library_references: tiny timm and Hugging Face ViTs as
the libraries save them, and what the libraries compute with them.

  pip install -e '.[interop]'
  python scripts/make_library_references.py

CI installs neither torch, timm nor transformers, so the tests that run the
libraries skip there (tests/models/test_torch_formats.py). These files let
`tests/models/test_library_references.py` check, with numpy and JAX alone,
that every checkpoint layout we read still computes what its library
computes, and that our exports still are the files the libraries computed
our logits with. Run it again (and commit the result) after a change to
`vit_jax/models/timm_format.py` or `hf_format.py` that changes what an
export writes, or to check a new version of the libraries.

Each case is a directory:
- import cases: `model/`, the library's own save (timm's `save_for_hf`,
  transformers' `save_pretrained`) of a randomly perturbed model, and
  `reference.npz` with `images` and its `outputs` on them (logits, or for a
  headless model its pooled features);
- export cases: `params.npz` (ours, random), `model/` (our export of them)
  and `reference.npz` (the library's logits of that export).
`cases.json` says, for each, the library, our model's settings, what the
checkpoint's config.json states of its function, and the library versions.
"""
import json
import os
import shutil

from absl import app, flags
import numpy as np

from vit_jax import models, tree_util
from vit_jax.models import build, hf_format, npz, timm_format

_OUT = flags.DEFINE_string("out", "tests/models/library_references",
                           "Where to write (replaced).")

# The tests' tiny ViT: width 16, 2 blocks, 2 heads, MLP 32, patch 4 on 16x16
# images (a 4x4 grid).
SHAPE = dict(hidden_size=16, num_layers=2, mlp_dim=32, num_heads=2)
IMAGE_SIZE = 16
NUM_CLASSES = 10
TIMM_ARGS = dict(img_size=IMAGE_SIZE, patch_size=4, embed_dim=16, depth=2, num_heads=2,
                 mlp_ratio=2.0, num_classes=NUM_CLASSES)
HF_SHAPE = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=4)

# What the libraries compute: timm's default GELU and PyTorch's is the exact
# (erf) one; CLIP's is OpenAI's quick one, with LayerNorms of epsilon 1e-5.
EXACT = dict(gelu="exact", layer_norm_epsilon=1e-6)
CLIP = dict(gelu="quick", layer_norm_epsilon=1e-5)

# timm architectures, as their published checkpoints name them: our model's
# settings for each, and what their config.json states of the function.
TIMM_IMPORTS = {
    "timm_vit_base_patch16_224": ("vit_base_patch16_224", dict(classifier="token"), EXACT),
    "timm_deit3_base_patch16_224": ("deit3_base_patch16_224", dict(
        classifier="token", layer_scale_init=1e-6), EXACT),
    "timm_vit_base_patch14_reg4_dinov2": ("vit_base_patch14_reg4_dinov2", dict(
        classifier="token", layer_scale_init=1e-5, num_registers=4), EXACT),
    "timm_vit_base_patch16_clip_quickgelu_224": ("vit_base_patch16_clip_quickgelu_224", dict(
        classifier="token", pre_norm=True), CLIP),
    "timm_vit_base_patch32_siglip_256": ("vit_base_patch32_siglip_256", dict(
        classifier="map"), dict(gelu="tanh", layer_norm_epsilon=1e-6)),
    "timm_vit_base_patch16_reg4_gap_256": ("vit_base_patch16_reg4_gap_256", dict(
        classifier="gap", fc_norm=True, num_registers=4), EXACT),
    "timm_vit_medium_patch16_gap_256": ("vit_medium_patch16_gap_256", dict(
        classifier="gap", layer_scale_init=1e-6), EXACT),
    "timm_deit_base_distilled_patch16_224": ("deit_base_distilled_patch16_224", dict(
        classifier="token", distillation_token=True), EXACT),
}

# Our models exported: (format, our settings).
EXPORTS = {
    "ours_to_timm": ("timm", dict(classifier="token")),
    "ours_to_timm_map_qk_norm": ("timm", dict(classifier="map", qk_norm=True)),
    "ours_to_timm_gap_registers_layer_scale": ("timm", dict(
        classifier="gap", fc_norm=True, num_registers=4, layer_scale_init=0.1, gelu="exact")),
    "ours_to_timm_clip": ("timm", dict(classifier="token", pre_norm=True, gelu="quick",
                                       layer_norm_epsilon=1e-5)),
    "ours_to_timm_distilled": ("timm", dict(classifier="token", distillation_token=True,
                                            gelu="exact")),
    "ours_to_hf": ("hf", dict(classifier="token")),
    "ours_to_hf_exact_gelu": ("hf", dict(classifier="token", gelu="exact")),
    "ours_to_hf_distilled": ("hf", dict(classifier="token", distillation_token=True)),
    "ours_to_hf_dinov2": ("hf", dict(classifier="token", layer_scale_init=0.1, gelu="exact")),
    "ours_to_hf_dinov2_registers": ("hf", dict(classifier="token", layer_scale_init=0.1,
                                               num_registers=4, gelu="exact")),
}

# Our settings a library's config.json states (`pretrained.stated_function`).
STATED = ("gelu", "layer_norm_epsilon")


def images():
  return np.random.default_rng(0).uniform(-1, 1, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(
      np.float32)


def perturbed(module, torch):
  """``module`` with noise on every parameter: the libraries start biases at zero
  and norms (and layer scales) at one or near zero, where a swapped mapping
  would go unseen."""
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for parameter in module.parameters():
      parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
  return module.eval()


def pooled_features(module, batch, torch):
  with torch.no_grad():
    return module(pixel_values=torch.from_numpy(batch.transpose(0, 3, 1, 2))).pooler_output.numpy()


def write_reference(directory, batch, outputs):
  np.savez(os.path.join(directory, "reference.npz"), images=batch,
           outputs=np.asarray(outputs, np.float32))


def timm_imports(out, timm, torch):
  cases = {}
  for case, (architecture, settings, stated) in TIMM_IMPORTS.items():
    torch.manual_seed(0)
    module = perturbed(timm.create_model(architecture, pretrained=False, **TIMM_ARGS), torch)
    directory = os.path.join(out, case)
    timm.models.save_for_hf(module, os.path.join(directory, "model"), model_args=TIMM_ARGS,
                            safe_serialization=True)
    write_reference(directory, images(), timm_format.torch_logits(module, images()))
    cases[case] = dict(library="timm", direction="import", outputs="logits",
                       architecture=architecture, model=settings, stated=stated)
  return cases


def hf_imports(out, transformers, torch):
  """A ViT classifier, a distilled DeiT, DINOv2 with and without registers and
  a whole CLIP (its image tower read), as google/vit-*,
  facebook/deit-*-distilled-*, facebook/dinov2-* and openai/clip-vit-* are
  saved."""
  modules = {  # built in turn, each from seed 0, so a case added changes no other
      "hf_vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
          intermediate_size=32, num_labels=NUM_CLASSES, **HF_SHAPE)),
                 "logits", dict(classifier="token"), dict(gelu="exact", layer_norm_epsilon=1e-12)),
      "hf_deit_distilled": (
          lambda: transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
              intermediate_size=32, num_labels=NUM_CLASSES, **HF_SHAPE)),
          "logits", dict(classifier="token", distillation_token=True),
          dict(gelu="exact", layer_norm_epsilon=1e-12)),
      "hf_dinov2": (lambda: transformers.Dinov2Model(transformers.Dinov2Config(
          mlp_ratio=2, **HF_SHAPE)),
                    "features", dict(classifier="token", layer_scale_init=1e-5), EXACT),
      "hf_dinov2_with_registers": (
          lambda: transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
              mlp_ratio=2, num_register_tokens=4, **HF_SHAPE)),
          "features", dict(classifier="token", layer_scale_init=1e-5, num_registers=4), EXACT),
      "hf_clip": (lambda: transformers.CLIPModel(transformers.CLIPConfig(
          vision_config=dict(intermediate_size=32, **HF_SHAPE), projection_dim=8,
          text_config=dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16, vocab_size=32, max_position_embeddings=8))),
                  "features", dict(classifier="token", pre_norm=True), CLIP),
  }
  cases = {}
  for case, (build_module, outputs, settings, stated) in modules.items():
    torch.manual_seed(0)
    module = perturbed(build_module(), torch)
    directory = os.path.join(out, case)
    module.save_pretrained(os.path.join(directory, "model"))
    if outputs == "logits":
      values = timm_format.torch_logits(module, images())
    else:
      values = pooled_features(getattr(module, "vision_model", module), images(), torch)
    write_reference(directory, images(), values)
    cases[case] = dict(library="transformers", direction="import", outputs=outputs,
                       architecture=type(module).__name__, model=settings, stated=stated)
  return cases


def random_params(model):
  """Every parameter random and centred, so no mapping hides behind a zero or a one."""
  rng = np.random.default_rng(0)
  abstract = build.abstract_params(model, IMAGE_SIZE)
  return npz.unflatten({name: (rng.random(leaf.shape, np.float32) - 0.5) * 0.6
                        for name, leaf in tree_util.flatten_named(abstract)})


def exports(out):
  cases = {}
  for case, (library, settings) in EXPORTS.items():
    model = models.get_model("Ti/4", num_classes=NUM_CLASSES, **SHAPE, **settings)
    params = random_params(model)
    directory = os.path.join(out, case)
    os.makedirs(directory)
    npz.save_npz(params, os.path.join(directory, "params.npz"))
    function = {key: settings[key] for key in STATED if key in settings}
    save, load = ((timm_format.save, timm_format.timm_model) if library == "timm"
                  else (hf_format.save, hf_format.hf_model))
    save(params, os.path.join(directory, "model"), image_size=IMAGE_SIZE, mean=0.5, std=0.5,
         **function)
    module = load(os.path.join(directory, "model"))
    write_reference(directory, images(), timm_format.torch_logits(module, images()))
    cases[case] = dict(library=library, direction="export", outputs="logits", model=settings)
  return cases


def main(argv):
  del argv
  torch = timm_format.require("torch", purpose="the library references")
  timm = timm_format.require("timm", purpose="the library references")
  transformers = timm_format.require("transformers", purpose="the library references")
  out = _OUT.value
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  cases = {**timm_imports(out, timm, torch), **hf_imports(out, transformers, torch),
           **exports(out)}
  manifest = dict(
      versions=dict(torch=torch.__version__.split("+")[0], timm=timm.__version__,
                    transformers=transformers.__version__),
      image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, shape=SHAPE, cases=cases)
  with open(os.path.join(out, "cases.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
  print(f"{len(cases)} cases written to {out}")


if __name__ == "__main__":
  app.run(main)
