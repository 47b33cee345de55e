"""Zip exports of catalogued files, read from their drives."""
