"""The native part of vecwal: capture's event codec (daemon/native/eventcodec.c) and the
record codec of its Python path (daemon/native/recordcodec.c), with the vendored yyjson JSON
reader; and the per-tenant sealer (daemon/native/tenantseal.c), which links OpenSSL's libcrypto
and is optional: without OpenSSL's headers it is not built and Python seals instead.
Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "daemon.native.eventcodec",
            sources=["daemon/native/eventcodec.c", "daemon/native/yyjson/yyjson.c"],
            depends=[f"daemon/native/{h}.h" for h in (
                "codec_text", "refusals", "codec_record", "codec_json", "codec_avro",
                "codec_results")],
            include_dirs=["daemon/native"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "daemon.native.recordcodec",
            sources=["daemon/native/recordcodec.c", "daemon/native/yyjson/yyjson.c"],
            include_dirs=["daemon/native"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "daemon.native.tenantseal",
            sources=["daemon/native/tenantseal.c"],
            depends=["daemon/native/siv_lanes.h", "daemon/native/xxhash/xxhash.h"],
            include_dirs=["daemon/native"],
            libraries=["crypto"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
