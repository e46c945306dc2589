"""The model component: TensorFlow graphs only. Sparse parameters (embeddings) live in the
parameter component (paramserver/); models take the pulled rows as inputs.

Importing ``models`` prepares TensorFlow for Keras 2 (``tf-keras``), which
tensorflow-recommenders needs: ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is
first imported, so it is set here, in one place. Import ``models`` (or any submodule)
before ``tensorflow``.
"""

import importlib.util
import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError("tensorflow was imported before models/: import models first, or set "
                      "TF_USE_LEGACY_KERAS=1 in the environment (tensorflow-recommenders needs Keras 2)")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no C++ info banners on every start

# a presence check, not an import: light users of models/ (the MovieLens loader in the
# simulator, the catalogue) must not pay TensorFlow's ~500 MiB and seconds of start-up
if importlib.util.find_spec("tf_keras") is None:  # pragma: no cover - set-up problem
    raise ImportError("tf-keras is missing: run 'make setup' (requirements.txt pins it)")
