"""Headwater sdk."""
