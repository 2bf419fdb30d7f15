"""s2s_course: the companion package of the course "Sequence to sequence, from RNNs to Transformers".

Chapters import what they teach from here; nothing is copied into the notebooks.
"""
from s2s_course.env import describe, get_device, in_colab, is_quick, pick, seed_everything, setup

__version__ = "0.1.0"
REPO_URL = "https://github.com/s2s-course/s2s-course"

__all__ = ["describe", "get_device", "in_colab", "is_quick", "pick", "seed_everything", "setup",
           "REPO_URL", "__version__"]
