"""Features of any layer, extracted once and cached on disk.

- :mod:`features.extract`: one forward pass per image, the requested layers hooked (named layers
  or dotted module paths) and pooled to one vector per image;
- :mod:`features.entry`: one cache entry's files, written, read (memory-mapped) and checked;
- :mod:`features.cache`: the cache itself, keyed by what determines the features.
"""
from features.cache import CACHE_FORMAT, FeatureCache, get_features
from features.entry import FeatureSet
from features.extract import describe_layers, extract, resolve_layers

__all__ = ["CACHE_FORMAT", "FeatureCache", "FeatureSet", "describe_layers", "extract", "get_features",
           "resolve_layers"]
