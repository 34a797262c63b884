"""R2-D2 for USB (semilearn 0.3.2): importing this package registers the ``r2d2`` and
``r2d2_strong`` algorithms and applies the plugin's USB patches (``r2d2_plugin.compat``)."""
from . import compat

compat.apply()

from .errors import ConfigError  # noqa: E402
from .hooks import RepredictHook  # noqa: E402
from .r2d2 import R2D2, d2_loss  # noqa: E402
from .r2d2_strong import R2D2Strong  # noqa: E402
from .schedule import StageSchedule  # noqa: E402
from .store import PseudoLabelStore  # noqa: E402

__all__ = ["ConfigError", "PseudoLabelStore", "R2D2", "R2D2Strong", "RepredictHook", "StageSchedule",
           "d2_loss"]
__version__ = "0.1.0"
