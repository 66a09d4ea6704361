"""Token-of-interest extraction and the feature store."""

from mmconcepts.extract.extraction import extract
from mmconcepts.extract.store import FeatureStoreWriter, read_manifest
from mmconcepts.extract.features import iter_feature_shards, load_captions, load_features, load_metadata

__all__ = ["FeatureStoreWriter", "extract", "iter_feature_shards", "load_captions", "load_features", "load_metadata",
           "read_manifest"]
