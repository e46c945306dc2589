"""Interaction histories: the data contract, the adapters onto it, and the default data.

Every component that reads a history (backfill, retrain, catalogue, simulator, experiments)
calls :func:`load`, so none of them knows a source format:

- ``contract.py``: the contract's tables (items, users, interactions) and their checks;
- ``history.py``: a checked history as events with task labels, feature IDs and examples;
- ``movielens.py``, ``retail.py``: adapters (MovieLens releases; the Taobao UserBehavior log);
- ``synthetic.py``: a seeded synthetic world with impressions, drift and late actions;
- ``default.py``: the data ``make demo`` uses when given none (ml-100k fetched, else synthetic).

No TensorFlow, no services: light enough for the model server and the simulator.
"""

from __future__ import annotations

from pathlib import Path

from datasets.contract import Tables

FORMATS = ("auto", "contract", "movielens", "retail")


def read_tables(folder: str | Path, fmt: str = "auto", actions: dict[str, list[str]] | None = None) -> Tables:
    """The contract tables of ``folder``, read by the adapter its files call for (``fmt``).

    Raises:
      FileNotFoundError: no such folder, or no format recognised (lists what each expects).
      datasets.contract.ContractError: a contract folder (or an adapter's output) breaks the contract.
    """
    from datasets import contract, movielens, retail

    folder = Path(folder)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder.resolve()} does not exist: pass a folder holding "
                                "items + interactions (the data contract, docs/data.md) or a MovieLens release")
    if fmt == "contract" or (fmt == "auto" and contract.is_contract(folder)):
        return contract.read(folder, actions)
    if fmt == "movielens" or (fmt == "auto" and movielens.is_movielens(folder)):
        return contract.check(movielens.tables(folder), f"the MovieLens adapter on {folder}", actions)
    if fmt == "retail" or (fmt == "auto" and retail.is_retail(folder)):
        return contract.check(retail.tables(folder), f"the retail adapter on {folder}", actions)
    raise FileNotFoundError(
        f"{folder} holds no history Flywheel reads: expected items.csv|parquet + interactions.csv|parquet "
        "(the data contract, docs/data.md), u.data or ratings.csv (MovieLens), or UserBehavior.csv (Taobao)")


def load(folder: str | Path, fmt: str = "auto", actions: dict[str, list[str]] | None = None):
    """The :class:`datasets.history.Dataset` of ``folder`` (see :func:`read_tables`)."""
    from datasets.history import from_tables

    return from_tables(read_tables(folder, fmt, actions), actions)


def resolve(path: str | Path | None, settings, echo=print) -> Path:
    """``path`` when given, else the default data (:func:`datasets.default.default_data`).

    Args:
      settings: the config's ``data`` section (``cache``, ``source``, ``synthetic``).
    """
    if path:
        return Path(path)
    from datasets.default import default_data

    return default_data(Path(settings.cache), settings.source, echo=echo, synthetic=settings.synthetic.model_dump())
