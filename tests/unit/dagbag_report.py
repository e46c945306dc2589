"""Load a DAG folder with Airflow's DagBag and write what the integrity test checks as JSON.

Runs in the Airflow environment (the ML environment has no Airflow):

    .venv/airflow/bin/python tests/unit/dagbag_report.py <dags folder> <report.json>

The report: ``{"import_errors": {file: traceback}, "dags": {dag_id: {"file", "tags",
"doc_md", "params": {name: default}, "tasks": {task_id: {"retries", "upstream"}}}}}``.
"""

import json
import sys

from airflow.models import DagBag


def report(folder: str) -> dict:
    """What DagBag made of every file in ``folder`` (the dag-processor's view, no database)."""
    bag = DagBag(dag_folder=folder)
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "file": dag.fileloc,
            "tags": sorted(dag.tags or []),
            "doc_md": dag.doc_md or "",
            "params": {name: dag.params[name] for name in dag.params},
            "tasks": {t.task_id: {"retries": t.retries, "upstream": sorted(t.upstream_task_ids)}
                      for t in dag.tasks},
        }
    return {"import_errors": dict(bag.import_errors), "dags": dags}


if __name__ == "__main__":
    folder, out = sys.argv[1], sys.argv[2]
    with open(out, "w") as f:
        json.dump(report(folder), f, default=str)
