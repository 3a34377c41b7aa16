"""The .kiln file format: container (header, manifest, checksummed blobs) and manifest schema.

Imported by the runtime, so it must not import the front end or the code generators.
"""

from kiln.artifact.container import FORMAT_MAJOR, FORMAT_MINOR, Container, pack, read_file, unpack
from kiln.artifact.manifest import (
    Binding,
    DispatchInfo,
    GraphInfo,
    KernelInfo,
    Manifest,
    ParamInfo,
    TargetInfo,
)

__all__ = [
    "FORMAT_MAJOR", "FORMAT_MINOR", "Binding", "Container", "DispatchInfo", "GraphInfo", "KernelInfo",
    "Manifest", "ParamInfo", "TargetInfo", "pack", "read_file", "unpack",
]
