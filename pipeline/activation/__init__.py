"""Marts -> the world: syncs declared in syncs.yaml, their destinations, and notifications."""
