"""EM3: end-to-end training of a multimodal model together with a ranking model."""
__version__ = "0.1.0"
