"""Layer 7: exact spherical geometry kernels (numpy, numba)."""

from .kernelcache import seed_numba_cache

# before any submodule imports numba: the image's precompiled kernels into its cache
seed_numba_cache()
