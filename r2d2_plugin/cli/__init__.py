"""The launcher: ``python -m r2d2_plugin.cli.train --c CONFIG.yaml`` (also ``r2d2-train``)."""
