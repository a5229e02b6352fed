# mypy: disable-error-code="explicit-override"
# (a build hook: the build environment has no typing_extensions for `@override`)
"""Build hook: generate the gRPC stubs (and their type stubs) from proto/ at install time.

Every build of the project runs it (`make install`, the image's `uv build --no-build-isolation`),
so nobody runs protoc by hand; `make install` rebuilds after a .proto file changes (pyproject.toml's
uv cache-keys).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ProtoBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        import grpc_tools
        from grpc_tools import protoc

        root = Path(self.root)
        proto_dir = root / "proto"
        protos = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
        plugin = shutil.which("protoc-gen-mypy") or str(
            Path(sys.executable).parent / "protoc-gen-mypy"
        )
        grpc_plugin = shutil.which("protoc-gen-mypy_grpc") or str(
            Path(sys.executable).parent / "protoc-gen-mypy_grpc"
        )
        args = [
            "grpc_tools.protoc",
            f"--proto_path={proto_dir}",
            f"--proto_path={Path(grpc_tools.__file__).parent / '_proto'}",
            f"--plugin=protoc-gen-mypy={plugin}",
            f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}",
            *(
                f"--{out}_out={root / 'src'}"
                for out in ("python", "grpc_python", "mypy", "mypy_grpc")
            ),
            *protos,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {protos}")
        # The generated files are git-ignored; artifacts puts them in the wheel anyway.
        build_data["artifacts"].extend(["/src/**/*_pb2.py*", "/src/**/*_pb2_grpc.py*"])
