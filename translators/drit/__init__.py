"""DRIT disentangled translator (sim ↔ exp) for single-channel STEM images.

:mod:`.model` holds the networks (:class:`~translators.drit.model.Drit`,
:class:`~translators.drit.model.Discriminators`, :class:`~translators.drit.model.DritConfig`),
:mod:`.losses` the loss terms (DRIT's and the Trident content-consistency loss), and
:mod:`.train` the training loop. Import the submodules directly; this package imports
nothing, so ``import translators.drit`` does not load torch.
"""
