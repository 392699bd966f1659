"""attncnn: attention-based convolutional image classifiers.

The public entry points are re-exported here; everything heavy is imported lazily by
the command line so that `attncnn --help` stays fast.
"""
from attncnn.analysis.explain import attention_maps
from attncnn.errors import AttncnnError
from attncnn.inference.weights import create_model_from_weights
from attncnn.models import create_model, list_models, make_attention
from attncnn.pretrained import list_pretrained

__version__ = "0.1.0"
__all__ = ["AttncnnError", "attention_maps", "create_model", "create_model_from_weights",
           "list_models", "list_pretrained", "make_attention", "__version__"]
