"""Downstream models that read STEM images, trained on the factory's datasets.

- :mod:`inference.data`: datasets over the HDF5 shards (:class:`ShardDataset`);
- :mod:`inference.regression` and :mod:`inference.segmenter`: the stacking regressor and the
  layer-resolved segmenter, with their training;
- :mod:`inference.evaluate`: scores on a dataset split;
- :mod:`inference.mapping`: sliding-window maps of large micrographs.
"""

from __future__ import annotations


from datafactory.lazy import lazy_exports  # noqa: E402

#: The downstream models' public names.
__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ShardDataset": "inference.data",
        "TrainSettings": "inference.training",
        "train_regression": "inference.regression",
        "train_segmentation": "inference.segmenter",
        "evaluate_regression": "inference.evaluate",
        "evaluate_segmentation": "inference.evaluate",
        "map_micrograph": "inference.mapping",
        "read_record": "inference.checkpoint",
    },
)
