"""Workers: their heartbeats, the reconciler that keeps the database true, and their views."""
