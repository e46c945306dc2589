"""Python's way to HDFS: WebHDFS through fsspec (no libhdfs is available from any registry)."""

from __future__ import annotations

import getpass

import fsspec

from flywheel.config import FlywheelConfig


def webhdfs(cfg: FlywheelConfig) -> fsspec.AbstractFileSystem:
    """An fsspec filesystem over WebHDFS on the stack's NameNode (usable by pyarrow.dataset)."""
    return fsspec.filesystem(
        "webhdfs",
        host=cfg.stack.host_of("hdfs_namenode"),
        port=cfg.hdfs.namenode_http_port,
        user=getpass.getuser(),
        use_listings_cache=False,
    )
