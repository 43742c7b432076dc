"""The evidence dossier: ``offline evidence build`` and ``offline evidence verify``."""
