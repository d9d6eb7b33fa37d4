"""Trainyard: a self-hosted training-job service."""
