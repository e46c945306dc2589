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
    """Inverse of :func:`encode`: (metadata, {column: ndarray}); lists come back 2-D.

    Arrays are zero-copy views of ``buf`` where Arrow allows (read-only); a message of several
    batches (not written by :func:`encode`) is combined first.
    """
    reader = pa.ipc.open_stream(pa.py_buffer(buf) if isinstance(buf, (bytes, bytearray, memoryview)) else buf)
    batches = list(reader)
    meta = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
    if len(batches) == 1:
        columns = zip(batches[0].schema.names, batches[0].columns)
    else:
        table = pa.Table.from_batches(batches, reader.schema)
        columns = ((name, table.column(name).combine_chunks()) for name in table.column_names)
    cols: dict[str, np.ndarray] = {}
    for name, col in columns:
        if pa.types.is_fixed_size_list(col.type):
            flat = col.values if col.offset == 0 and col.null_count == 0 else col.flatten()
            cols[name] = flat.to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    return meta, cols
