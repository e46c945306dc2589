"""DAG integrity: every file in dags/ loads in the Airflow environment without import errors,
and every DAG has tags, a doc_md and retries >= 1 on each task.

Airflow lives in .venv/airflow, not in the ML environment that runs pytest, so the DagBag is
filled by a subprocess (tests/unit/dagbag_report.py) with AIRFLOW_HOME in a temp dir.
"""

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from flywheel.paths import REPO_ROOT, VENV

AIRFLOW_PYTHON = VENV / "airflow" / "bin" / "python"
REPORT_SCRIPT = Path(__file__).with_name("dagbag_report.py")
DAGS = REPO_ROOT / "dags"


def dagbag_report(folder: Path, workdir: Path) -> dict:
    """Load ``folder`` with Airflow's DagBag in the Airflow env; return dagbag_report.py's JSON."""
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"{AIRFLOW_PYTHON} is missing: run 'make setup' to create the Airflow environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(workdir / "airflow-home"), PYTHONPATH=str(REPO_ROOT),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__DAGS_FOLDER=str(folder))
    out = workdir / "dagbag.json"
    proc = subprocess.run([str(AIRFLOW_PYTHON), str(REPORT_SCRIPT), str(folder), str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"DagBag could not load {folder} (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


def problems(report: dict) -> list[str]:
    """Every integrity problem in a DagBag report, one readable line (or traceback) each."""
    out = [f"{file}: import error:\n{trace}" for file, trace in report["import_errors"].items()]
    for dag_id, dag in report["dags"].items():
        where = f"DAG {dag_id} ({dag['file']})"
        if not dag["tags"]:
            out.append(f"{where}: no tags; add tags=[...] to @dag")
        if not dag["doc_md"].strip():
            out.append(f"{where}: no doc_md; give the file a docstring and pass doc_md=__doc__")
        for task_id, task in dag["tasks"].items():
            if (task["retries"] or 0) < 1:
                out.append(f"{where}: task {task_id} has retries={task['retries']}; "
                           "set default_args={'retries': 1, ...}")
    return out


@pytest.fixture(scope="module")
def repo_report(tmp_path_factory) -> dict:
    return dagbag_report(DAGS, tmp_path_factory.mktemp("dagbag"))


def test_every_dag_loads_with_tags_docs_and_retries(repo_report):
    assert repo_report["dags"], f"DagBag found no DAG in {DAGS}"
    found = problems(repo_report)
    assert not found, "DAG integrity problems:\n" + "\n".join(found)


def test_stack_smoke_counts_what_it_wrote(repo_report):
    dag = repo_report["dags"]["stack_smoke"]
    assert {"flywheel", "smoke"} <= set(dag["tags"])
    assert dag["params"] == {"rows": 100}
    assert dag["tasks"]["spark_count"]["upstream"] == ["write_partition"]


BROKEN = """\
from airflow.sdk import dag
import flywheel_no_such_module  # noqa: F401
"""

BARE = """\
from airflow.sdk import dag, task


@dag(dag_id="bare", schedule=None)
def bare():
    @task
    def hello():
        return 1

    hello()


bare()
"""


def test_integrity_check_reports_import_errors_and_missing_tags_docs_retries(tmp_path):
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "broken.py").write_text(BROKEN)
    (folder / "bare.py").write_text(textwrap.dedent(BARE))

    found = problems(dagbag_report(folder, tmp_path))

    assert any("broken.py: import error" in p and "flywheel_no_such_module" in p for p in found), found
    assert any("DAG bare" in p and "no tags" in p for p in found), found
    assert any("DAG bare" in p and "no doc_md" in p for p in found), found
    assert any("DAG bare" in p and "task hello has retries=0" in p for p in found), found
