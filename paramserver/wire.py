"""What crosses the wire between trainers, servers and parameter servers: one Arrow IPC
stream per message (raw uint64 IDs and float32 rows, zero-copy on both ends; never JSON for
rows), with the message's fields (op, table, request id, ...) in the schema metadata.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def encode(meta: dict[str, str], **columns: np.ndarray) -> pa.Buffer:
    """One record batch: 1-D arrays as plain columns, 2-D float32 arrays as fixed-size lists."""
    arrays, names = [], []
    for name, col in columns.items():
        col = np.ascontiguousarray(col)
        if col.ndim == 2:
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(col.reshape(-1)), col.shape[1]))
        else:
            arrays.append(pa.array(col))
        names.append(name)
    batch = pa.record_batch(arrays, names=names)
    batch = batch.replace_schema_metadata({k: str(v) for k, v in meta.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def decode(buf) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Inverse of :func:`encode`: (metadata, {column: ndarray}); lists come back 2-D."""
    reader = pa.ipc.open_stream(pa.py_buffer(buf) if isinstance(buf, (bytes, bytearray, memoryview)) else buf)
    table = reader.read_all()
    meta = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
    cols: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
            flat = col.flatten().to_numpy(zero_copy_only=False)
            cols[name] = flat.reshape(len(col), width)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    return meta, cols
