"""Faces in a frame: detection, matching to last frame's faces, crops, the int8 classifier and
the per-frame pipeline."""
