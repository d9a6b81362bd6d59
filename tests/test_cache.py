import numpy as np
import torch

from samlab.models import EmbeddingCache, Predictor


def test_cache_reuses_encoder_pass_in_memory_and_on_disk(tmp_path, litemedsam):
    image = np.random.default_rng(0).random((64, 80)).astype(np.float32)
    cache = EmbeddingCache(tmp_path)
    predictor = Predictor(litemedsam, cache=cache)
    first = predictor.embed(image).features
    again = predictor.embed(image).features
    assert predictor.encoder_calls == 1 and cache.hits == 1
    assert torch.equal(first, again)
    # a fresh process-like cache (empty memory) finds the entry on disk
    fresh = Predictor(litemedsam, cache=EmbeddingCache(tmp_path))
    assert torch.equal(fresh.embed(image).features, first) and fresh.encoder_calls == 0
    # different pixels -> a different key -> an encoder pass
    fresh.embed(image + 1e-3)
    assert fresh.encoder_calls == 1


def test_key_depends_on_namespace_shape_and_dtype():
    image = np.zeros((4, 4), np.float32)
    keys = {
        EmbeddingCache.key("a", image),
        EmbeddingCache.key("b", image),
        EmbeddingCache.key("a", image.astype(np.float64)),
        EmbeddingCache.key("a", image.reshape(2, 8)),
    }
    assert len(keys) == 4


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("ab" + "0" * 62, torch.ones(2))
    cache.clear_memory()
    path = next(tmp_path.rglob("*.pt"))
    path.write_bytes(b"not a tensor")
    assert cache.get("ab" + "0" * 62) is None and not path.exists()


def test_random_init_models_do_not_share_cached_embeddings():
    """Random weights carry no file hash: the namespace hashes the encoder, so another draw gets other entries."""
    import torch

    from samlab.models import Predictor, load_model

    def namespace(seed: int) -> str:
        torch.manual_seed(seed)
        return Predictor(load_model("litemedsam", allow_random_init=True)).cache_namespace

    assert namespace(0) == namespace(0) != namespace(1)
    assert "encoder-" in namespace(0) and "encoder-" not in Predictor(load_model("litemedsam")).cache_namespace
