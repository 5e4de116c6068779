"""Headwater runtime."""
