"""Layer 7: exact spherical geometry kernels (numpy, numba)."""
