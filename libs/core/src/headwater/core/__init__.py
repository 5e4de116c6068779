"""Headwater core."""
