"""MIRAGE in PyTorch: model, signal conditioning, rendering, datasets, training and evaluation.

MIRAGE = Multimodal Integration via Representational Alignment using Graphormer and Encoders.
"""
