"""genzoo's Hydra config tree, shipped as package data (``pkg://genzoo.conf``).

Importing it registers the resolvers its YAML uses, so the tree composes wherever it is loaded from (the scripts,
Hydra's compose API, a notebook):

* ``${genzoo_uid:}`` in run folder names: cached per config, so every reader of the name sees the same value;
* ``${genzoo_cwd:}``: the folder the command was started in. Hydra's ``${hydra:runtime.cwd}`` is the same folder,
  but a multirun resolves its sweep folder before it sets the Hydra config, so the paths a sweep folder is built
  from cannot use it.

``hydra/launcher/*.yaml`` share their names with the launcher plugins' own schemas, which Hydra 1.3 still merges
them into with a deprecation warning on every start: genzoo's files give the schema's keys only, so the warning is
silenced (``hydra/launcher=joblib`` must keep meaning the plugin's launcher, hence the names).
"""

import os
import secrets
import warnings

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("genzoo_uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)
OmegaConf.register_new_resolver("genzoo_cwd", os.getcwd, replace=True)
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")
