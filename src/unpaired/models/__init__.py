"""Model families, one package each, and the registry (``models.registry``) through which the
rest of the package finds them."""
