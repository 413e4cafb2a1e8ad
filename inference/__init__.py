"""Downstream models that read STEM images, trained on the factory's datasets.

- :mod:`inference.data`: datasets over the HDF5 shards (:class:`ShardDataset`);
- :mod:`inference.regression` and :mod:`inference.segmentation`: the stacking regressor and the
  layer-resolved segmenter, with their training (networks in :mod:`inference.segmentation_nets`,
  losses in :mod:`inference.segmentation_losses`, atoms read off the maps in :mod:`inference.atom_points`);
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
        "train_segmentation": "inference.segmentation",
        "Regressor": "inference.regression",
        "Segmenter": "inference.segmentation",
        "UNet": "inference.segmentation_nets",
        "GombNet": "inference.segmentation_nets",
        "evaluate_regression": "inference.evaluate",
        "evaluate_segmentation": "inference.evaluate",
        "map_micrograph": "inference.mapping",
        "read_record": "inference.checkpoint",
    },
)
