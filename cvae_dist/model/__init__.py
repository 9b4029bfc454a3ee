"""The course's conditional VAE and its building blocks."""

from cvae_dist.model.cvae import CVAE

__all__ = ["CVAE"]
