"""The launcher: long-lived per-model service processes (predictors, Aim UIs) for every API
process of a deployment, recorded in the `services` table (see docs/architecture.md)."""
