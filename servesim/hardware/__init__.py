"""Hardware: the GPU catalog (datasheet facts) and kernel profiles (what kernels achieve).

``gpu`` holds the catalog types and lookups, ``kernel_profile`` the profile's
mechanisms.
"""

from servesim.hardware.gpu import GPU, get_gpu, gpu_names
from servesim.hardware.kernel_profile import PROFILE_FIELDS, KernelProfile

__all__ = ["GPU", "KernelProfile", "PROFILE_FIELDS", "get_gpu", "gpu_names"]
