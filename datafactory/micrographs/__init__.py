"""Real micrographs: reading them with their calibration, and measuring their lattices and contrast.

- :mod:`.io` (``Micrograph``, ``read_micrographs``) through :mod:`.formats`, one reader per file format.
- :mod:`.lattice` (a material's projected lattice), :mod:`.fourier_spots` (Bragg spots),
  :mod:`.spot_indexing` (spots against one lattice), :mod:`.lattice_search` (several lattices:
  twisted layers, hetero-bilayers), :mod:`.calibration` (pixel size and scan distortion),
  :mod:`.fourier_twist` (a bilayer's twist from its spots).
- :mod:`.contrast` (column contrast and the γ / source-size fit), :mod:`.matching`
  (one-to-one matching of two point sets, e.g. found columns against a reference).
"""
