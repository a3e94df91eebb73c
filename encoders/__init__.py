"""Content understanding: media decoding, text/audio/video towers and fusion.

The towers are plain PyTorch modules. In production they run inside Triton
(``triton_models/*/1/model.py`` imports them); :mod:`encoders.client` is how the
streaming worker calls them.
"""
