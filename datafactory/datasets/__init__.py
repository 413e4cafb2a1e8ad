"""Datasets on disk: HDF5 shards (schema v2), the manifest and card, checks, validation and pictures.

- :mod:`.shards` writes and reads the shard schema; :mod:`.h5_output` writes HDF5 through a
  file object that survives a full disk.
- :mod:`.dataset` is a generated dataset's directory: shards, ``manifest.json``, the card.
- :mod:`.card` (the dataset card), :mod:`.croissant` (``croissant.json``, ``samples.csv``).
- :mod:`.shard_checks` checks one shard; :mod:`.validate` a whole dataset (``factory validate``).
- :mod:`.report` (``factory inspect`` / ``preview``) and :mod:`.preview` (image grids with masks).
"""
