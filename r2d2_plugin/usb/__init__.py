"""What the plugin adds to USB: the CPU stand-ins and crash-safe checkpoints (``compat``), the offline datasets and the nets."""
