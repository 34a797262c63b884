"""R2-D2 as USB algorithms: ``r2d2`` (the reference method) and ``r2d2_strong``, with their hooks."""
