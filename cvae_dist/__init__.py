"""cvae-dist: the course's conditional VAE for video prediction, trained with Hugging Face Accelerate."""

__version__ = "0.1.0"
