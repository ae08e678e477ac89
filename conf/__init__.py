"""genzoo's Hydra config tree, shipped as package data (``pkg://genzoo.conf``)."""
