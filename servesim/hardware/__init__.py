"""Hardware: the GPU catalog (datasheet facts) and kernel profiles (what kernels achieve).

``gpu`` holds the catalog types and lookups, ``kernel_profile`` the profile's
mechanisms, ``framework`` the serving frameworks' per-step overheads, ``calibrate``
the fit of profiles to measured kernels and ``profiler`` the timing of kernels on the
local device.
"""

from servesim.hardware.framework import FrameworkProfile, framework_names, get_framework
from servesim.hardware.gpu import GPU, default_profile_name, get_gpu, get_profile, gpu_names, profile_names
from servesim.hardware.kernel_profile import PROFILE_FIELDS, KernelProfile, ProfileError

__all__ = ["FrameworkProfile", "GPU", "KernelProfile", "PROFILE_FIELDS", "ProfileError",
           "default_profile_name", "framework_names", "get_framework", "get_gpu", "get_profile",
           "gpu_names", "profile_names"]
