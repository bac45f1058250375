"""The encoders of ``python -m benchmark.features``: CLIP image and text towers and RoBERTa (through
transformers), and optional timm / torchvision image backbones (imported only when named).

Every model loads from a local folder or from a model name that the environment can fetch
(``from_pretrained``); nothing here downloads on its own. All encoders run in batches under
``torch.inference_mode`` on the chosen device and return float32 NumPy arrays.

* CLIP image features: ``visual_projection(vision_model(pixels).pooler_output)``, the output of
  OpenAI's ``encode_image``, not L2-normalised (as the DL-DKD teacher files store them,
  docs/methods.md §1.1). Pixels: shortest side resized to the model's image size (bicubic),
  centre crop, CLIP mean/std, as OpenAI's ``clip.load`` preprocessing does.
* CLIP text features: ``text_projection`` of the end-of-text token state, (1, d) per caption,
  at most 77 tokens (longer captions are truncated; OpenAI's ``clip.tokenize`` refuses them).
* RoBERTa token features: the hidden states of one layer (default the last) for every token
  the tokenizer produces, ``<s>`` and ``</s>`` included, at most ``max_tokens`` of them.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from benchmark.errors import PRVRBenchError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_TEXT_MODEL = "FacebookAI/roberta-large"


class FeatureModelError(PRVRBenchError, ValueError):
    """A model that cannot be loaded or used; the message names it and says what to do."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FeatureModelError(f"--device {name}: CUDA is not available here")
    return device


@dataclass(frozen=True)
class ImagePreprocess:
    """PIL RGB image -> (3, crop, crop) float tensor: resize the shortest side to ``resize``
    (bicubic), centre crop, scale to [0, 1], normalise by ``mean``/``std``."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        scale = self.resize / min(width, height)
        size = (max(self.crop, round(width * scale)), max(self.crop, round(height * scale)))
        image = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels.float() / 255.0 - mean) / std


def _transformers():
    import transformers

    return transformers


def _from_pretrained(what: str, loader: Any, name: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise FeatureModelError(
            f"cannot load the {what} {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "pass a local folder holding the model (config.json, weights, tokenizer files) "
            "or a model name this environment can fetch") from None


def _clip_pixels(name: str, image_size: int) -> ImagePreprocess:
    """CLIP preprocessing; a local folder's preprocessor_config.json, when present, wins."""
    resize, crop, mean, std = image_size, image_size, CLIP_MEAN, CLIP_STD
    config = Path(name) / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        size = data.get("size", {})
        resize = int(size.get("shortest_edge", resize)) if isinstance(size, dict) else int(size)
        crop_size = data.get("crop_size", crop)
        crop = int(crop_size.get("height", crop)) if isinstance(crop_size, dict) else int(crop_size)
        mean = tuple(data.get("image_mean", mean))
        std = tuple(data.get("image_std", std))
    return ImagePreprocess(resize, crop, mean, std)  # type: ignore[arg-type]


class ImageEncoder:
    """Batched image features. ``name`` says what it is (recorded in the extraction report)."""

    name: str
    dim: int
    preprocess: ImagePreprocess
    device: torch.device

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, images: Sequence[torch.Tensor]) -> np.ndarray:
        """Shapes: n preprocessed (3, S, S) tensors -> (n, dim) float32."""
        with torch.inference_mode():
            pixels = torch.stack(list(images)).to(self.device)
            return self._forward(pixels).float().cpu().numpy()


class ClipImageEncoder(ImageEncoder):
    def __init__(self, name: str, device: torch.device) -> None:
        tf = _transformers()
        self.name = f"clip-image:{name}"
        self.device = device
        clip = _from_pretrained("CLIP model", tf.CLIPModel, name)
        self.vision = clip.vision_model.to(device).eval()          # the text tower is dropped
        self.projection = clip.visual_projection.to(device).eval()
        self.dim = int(clip.config.projection_dim)
        self.preprocess = _clip_pixels(name, int(clip.config.vision_config.image_size))

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(self.vision(pixel_values=pixels).pooler_output)


class BackboneEncoder(ImageEncoder):
    """A timm (``timm:NAME``) or torchvision (``torchvision:NAME``) classifier with its head
    removed, pretrained weights as the library resolves them. Neither library is a dependency
    of prvr-bench: it must be importable in the environment."""

    def __init__(self, spec: str, device: torch.device) -> None:
        library, _, model_name = spec.partition(":")
        if library not in ("timm", "torchvision") or not model_name:
            raise FeatureModelError(f"--student {spec!r}: expected 'clip', 'timm:NAME' or "
                                    "'torchvision:NAME'")
        try:
            module = importlib.import_module(library if library == "timm" else "torchvision.models")
        except ImportError as exc:
            raise FeatureModelError(
                f"--student {spec!r} needs {library}, which is not importable here ({exc}); "
                f"install a {library} build that matches this torch ({torch.__version__}) "
                "yourself: it is not part of the features extra") from None
        self.name = spec
        self.device = device
        if library == "timm":
            model = module.create_model(model_name, pretrained=True, num_classes=0)
            config = importlib.import_module("timm.data").resolve_data_config({}, model=model)
            crop = int(config["input_size"][-1])
            self.preprocess = ImagePreprocess(int(round(crop / config.get("crop_pct", 0.875))), crop,
                                              tuple(config["mean"]), tuple(config["std"]))
        else:
            model = module.get_model(model_name, weights="DEFAULT")
            for head in ("fc", "classifier", "heads", "head"):
                if hasattr(model, head):
                    setattr(model, head, torch.nn.Identity())
            self.preprocess = ImagePreprocess(256, 224, IMAGENET_MEAN, IMAGENET_STD)
        self.model = model.to(device).eval()
        probe = torch.zeros(1, 3, self.preprocess.crop, self.preprocess.crop, device=device)
        with torch.inference_mode():
            self.dim = int(self._forward(probe).reshape(1, -1).shape[1])

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels).reshape(pixels.shape[0], -1)


def image_encoder(spec: str, clip: ClipImageEncoder | None, device: torch.device) -> ImageEncoder:
    """The student backbone: ``clip`` (the teacher's own features) or a timm/torchvision one."""
    if spec == "clip":
        if clip is None:
            raise ValueError("student 'clip' needs the CLIP image encoder")
        return clip
    return BackboneEncoder(spec, device)


class ClipTextEncoder:
    def __init__(self, name: str, device: torch.device) -> None:
        tf = _transformers()
        self.name = f"clip-text:{name}"
        self.device = device
        self.tokenizer = _from_pretrained("CLIP tokenizer", tf.AutoTokenizer, name)
        clip = _from_pretrained("CLIP model", tf.CLIPModel, name)
        self.text = clip.text_model.to(device).eval()              # the vision tower is dropped
        self.projection = clip.text_projection.to(device).eval()
        self.dim = int(clip.config.projection_dim)
        self.max_tokens = min(int(clip.config.text_config.max_position_embeddings), 77)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Shapes: n captions -> (n, dim) float32, raw (not normalised)."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_tokens, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.text(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return self.projection(out.pooler_output).float().cpu().numpy()


class TokenEncoder:
    """RoBERTa (or any transformers encoder) token features of one hidden layer."""

    def __init__(self, name: str, device: torch.device, *, layer: int = -1, max_tokens: int = 64) -> None:
        tf = _transformers()
        self.name = f"tokens:{name}"
        self.device = device
        self.layer = layer
        self.tokenizer = _from_pretrained("text tokenizer", tf.AutoTokenizer, name)
        self.model = _from_pretrained("text model", tf.AutoModel, name).to(device).eval()
        layers = int(self.model.config.num_hidden_layers)
        if not -(layers + 1) <= layer <= layers:
            raise FeatureModelError(f"--text-layer {layer}: {name!r} has hidden states 0..{layers} "
                                    f"(0 = embeddings, -1 = last)")
        limit = int(getattr(self.model.config, "max_position_embeddings", max_tokens))
        # RoBERTa's position ids start after the padding index: 514 positions hold 512 tokens
        self.max_tokens = min(max_tokens, limit - 2 if "roberta" in self.model.config.model_type else limit)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Shapes: n captions -> n arrays (L_i, dim) float32, L_i ≤ max_tokens."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_tokens, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=self.layer != -1)
            states = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        states = states.float().cpu().numpy()
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        # padding sits on the right for RoBERTa and BERT tokenizers
        if getattr(self.tokenizer, "padding_side", "right") != "right":
            raise FeatureModelError(f"{self.name}: left-padding tokenizers are not supported")
        return [states[i, :n] for i, n in enumerate(lengths)]
