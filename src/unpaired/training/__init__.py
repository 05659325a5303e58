"""Training: the loop every model family shares (``loop``), what it asks of a family
(``contracts``) and how a run computes (``speed``)."""
