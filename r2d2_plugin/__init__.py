"""R2-D2 for USB (semilearn 0.3.2).

Importing this package applies the plugin's USB patches (``r2d2_plugin.usb.compat``) and
registers the ``r2d2`` and ``r2d2_strong`` algorithms. Layers, each importing only those above it:

- ``core``: the D2 loss, the four-stage schedule and the pseudo-label store (plain PyTorch);
- ``algorithms``: the USB algorithm classes and their hooks; ``usb``: patches, datasets, nets;
- ``cli``: the launcher (config, train, torchrun, progress / curves / W&B hooks);
- ``tools``: the experiment tools (bench, sweep, flattening, scale, make_configs, options).
"""
from .usb import compat

compat.apply()

from .algorithms.hooks import RepredictHook  # noqa: E402
from .algorithms.r2d2 import R2D2  # noqa: E402
from .algorithms.r2d2_strong import R2D2Strong  # noqa: E402
from .core.loss import d2_loss  # noqa: E402
from .core.schedule import StageSchedule  # noqa: E402
from .core.store import PseudoLabelStore  # noqa: E402
from .errors import ConfigError  # noqa: E402

__all__ = ["ConfigError", "PseudoLabelStore", "R2D2", "R2D2Strong", "RepredictHook", "StageSchedule",
           "d2_loss"]
__version__ = "0.2.0"
