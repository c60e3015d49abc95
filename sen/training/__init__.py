"""Training SEN: datasets (:mod:`~sen.training.data`), settings (:mod:`~sen.training.config`), the loop
(:mod:`~sen.training.loop`), scores (:mod:`~sen.training.metrics`), evaluation, the CGCNN baseline and
packaging runs as a shipped model.

This package imports from the core (``sen.io`` ... ``sen.checkpoint``); the core never imports it, so
prediction does not load the training machinery.
"""
