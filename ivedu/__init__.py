"""ivedu: instruction vectors and forgetting in LLM fine-tuning, reproduced on a real chat model and in miniature.

The book's chapters call these functions; each module follows one step of the method
(see the README for the map).
"""

from ivedu.models import load_model
from ivedu.world import build_world

__version__ = "0.1.0"
__all__ = ["load_model", "build_world", "__version__"]
