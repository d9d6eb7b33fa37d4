"""Inference: predict images with a finished training's model; publish checkpoints."""
