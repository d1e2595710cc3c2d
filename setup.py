"""Build the optional C speedup; everything else is in pyproject.toml.

``connector/binance/_scan.c`` decodes the busiest Binance events straight into
records. It is optional (like websockets' speedups): where no C compiler is
found the build goes on without it and the pure-Python decoder is used.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "connector.binance._scan",
            sources=["connector/binance/_scan.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
            optional=True,
        )
    ]
)
