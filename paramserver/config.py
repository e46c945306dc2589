"""Per-table settings of a collisionless embedding table: dimension, initializer, optimizer,
admission, expiry. Plain frozen dataclasses, checked on construction.

Example::

    TableConfig(name="user_id", dim=64, optimizer=Adagrad(learning_rate=0.05),
                admit_after=3, ttl_seconds=7 * 86400)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Union


@dataclass(frozen=True)
class Sgd:
    """w -= lr * g. No slots."""

    learning_rate: float = 0.01
    kind: Literal["sgd"] = "sgd"


@dataclass(frozen=True)
class Adagrad:
    """acc += g^2; w -= lr * g / (sqrt(acc) + epsilon). One slot per dimension."""

    learning_rate: float = 0.01
    initial_accumulator: float = 0.1
    epsilon: float = 1e-7
    kind: Literal["adagrad"] = "adagrad"


@dataclass(frozen=True)
class Ftrl:
    """FTRL-Proximal (McMahan et al. 2013), as TensorFlow's Ftrl with lr_power=-0.5.
    Two slots per dimension (z, n)."""

    learning_rate: float = 0.05
    initial_accumulator: float = 0.1
    l1: float = 0.0
    l2: float = 0.0
    beta: float = 0.0
    kind: Literal["ftrl"] = "ftrl"


Optimizer = Union[Sgd, Adagrad, Ftrl]
OPTIMIZERS = {"sgd": Sgd, "adagrad": Adagrad, "ftrl": Ftrl}
OPTIMIZER_CODES = {"sgd": 0, "adagrad": 1, "ftrl": 2}
SLOTS = {"sgd": 0, "adagrad": 1, "ftrl": 2}
INITIALIZER_CODES = {"zeros": 0, "uniform": 1, "normal": 2}


@dataclass(frozen=True)
class TableConfig:
    """One embedding table.

    Args:
      name: table name (a feature slot such as ``user_id``).
      dim: embedding width (floats per row).
      optimizer: :class:`Sgd`, :class:`Adagrad` or :class:`Ftrl`; applied on the table.
      initializer: ``zeros``, ``uniform`` (in ±init_scale) or ``normal`` (std init_scale);
        deterministic per ID and ``seed``.
      admit_after: sightings (lookups with ``insert=True``) before an ID gets a row; 1 admits
        at once. Until then lookups read zeros and gradients are dropped.
      sketch_width, sketch_depth: size of the count-min sketch behind admission
        (width * depth * 4 bytes, fixed).
      ttl_seconds: a row not updated for this long is removed by ``evict``; 0 keeps rows.
      track_changes: keep touched IDs and tombstones for ``export_delta`` (off on replicas
        that never export).
      expected_rows: pre-size the index (0: grow as needed).
      threads: threads per batch call (0: all cores).
    """

    name: str
    dim: int
    optimizer: Optimizer = field(default_factory=Adagrad)
    initializer: Literal["zeros", "uniform", "normal"] = "uniform"
    init_scale: float = 0.05
    seed: int = 0
    admit_after: int = 1
    sketch_width: int = 1 << 20
    sketch_depth: int = 4
    ttl_seconds: int = 0
    track_changes: bool = True
    expected_rows: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.dim <= 65536:
            problems.append(f"dim={self.dim} must be in 1..65536")
        if self.initializer not in INITIALIZER_CODES:
            problems.append(f"initializer={self.initializer!r} must be one of {sorted(INITIALIZER_CODES)}")
        if not isinstance(self.optimizer, (Sgd, Adagrad, Ftrl)):
            problems.append(f"optimizer={self.optimizer!r} must be Sgd(), Adagrad() or Ftrl()")
        elif not self.optimizer.learning_rate > 0:
            problems.append(f"optimizer.learning_rate={self.optimizer.learning_rate} must be > 0")
        if not 1 <= self.admit_after <= 2**32 - 1:
            problems.append(f"admit_after={self.admit_after} must be >= 1")
        if self.sketch_width < 1 or not 1 <= self.sketch_depth <= 16:
            problems.append(f"sketch {self.sketch_width}x{self.sketch_depth} must be width >= 1, depth 1..16")
        if not 0 <= self.ttl_seconds <= 2**32 - 1:
            problems.append(f"ttl_seconds={self.ttl_seconds} must be >= 0")
        if problems:
            raise ValueError(f"table {self.name!r}: " + "; ".join(problems))

    @property
    def row_floats(self) -> int:
        """Floats per stored row: the embedding and its optimizer slots."""
        return self.dim * (1 + SLOTS[self.optimizer.kind])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TableConfig:
        data = dict(data)
        opt = dict(data.pop("optimizer"))
        kind = opt.get("kind")
        optimizer = OPTIMIZERS[kind](**opt)
        return cls(optimizer=optimizer, **data)
