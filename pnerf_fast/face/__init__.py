"""Canonical face space: landmarks, mean face, similarity transforms, photo alignment."""
