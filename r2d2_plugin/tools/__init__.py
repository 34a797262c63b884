"""Experiment tools: the head-to-head bench, sensitivity sweep, flattening, store scale, config writer."""
