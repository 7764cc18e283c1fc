"""Benchmarks: what a centralized session costs, side by side with the usual choices.

Run ``python -m bench --help``. Every figure comes from one run in which the
variants are interleaved and repeated, because this machine is shared and noisy:
only medians and ratios measured side by side mean anything here.
"""
