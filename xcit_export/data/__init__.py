"""Data: image sources (folders, lists, arrays), seeded selection, timm-style preprocessing, the demo set."""
