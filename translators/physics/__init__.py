"""The physics terms of the parametric style model, each a small pure function of its own subject.

- :mod:`.scan_distortion`: scan artefacts as one displacement field on image, masks and atoms;
  :mod:`.scan_response`: the detector's response along the fast scan.
- :mod:`.noise_structure`: how the noise is correlated along and across lines.
- :mod:`.slow_background` (slow gain, skewed contamination) and :mod:`.adsorbates`.
- :mod:`.filters`: filters and smooth random fields the terms share.

:mod:`translators.parametric` combines them into the fitted model, from what
:mod:`translators.style_measurements` reads off the experimental images.
"""
