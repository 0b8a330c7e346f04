"""The native part of vecwal: capture's event codec (daemon/native/eventcodec.c, with the
vendored yyjson JSON reader). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "daemon.native.eventcodec",
            sources=["daemon/native/eventcodec.c", "daemon/native/yyjson/yyjson.c"],
            include_dirs=["daemon/native"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
