"""bassray: bass accompaniment generation via latent diffusion, on Ray."""
__version__ = "0.1.0"
