"""Model registry, the shared predictor API and the embedding cache."""
from .cache import EmbeddingCache
from .predictor import Decoded, Embedding, Predictor, prepare_image
from .registry import (
    MODEL_SPECS,
    CheckpointError,
    LoadedModel,
    ModelSpec,
    get_spec,
    list_models,
    load_model,
    load_state_dict_safely,
    resolve_device,
)

__all__ = [
    "MODEL_SPECS",
    "CheckpointError",
    "Decoded",
    "Embedding",
    "EmbeddingCache",
    "LoadedModel",
    "ModelSpec",
    "Predictor",
    "get_spec",
    "list_models",
    "load_model",
    "load_state_dict_safely",
    "prepare_image",
    "resolve_device",
]
