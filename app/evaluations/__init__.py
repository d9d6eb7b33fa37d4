"""Evaluation: Aim's UI over a training's metrics, served through Trainyard."""
