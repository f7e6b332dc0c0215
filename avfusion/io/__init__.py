"""Readers and writers: every on-disk format becomes the same ``Log``."""
