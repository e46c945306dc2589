"""The closed loop's supervised services: started on demand only, with what they need, and
the demo's MovieLens folder reaching the supervised programs' environment."""

from flywheel.config import load_config
from flywheel.demo import with_data
from flywheel.stack.base import services
from flywheel.stack.control import ServiceStatus, _select
from flywheel.stack.supervisor import render


def test_a_bare_up_leaves_the_loop_alone():
    cfg = load_config()
    chosen = {s.name for s in _select(cfg, None)}
    assert not chosen & {"model-server", "online-trainer", "simulator"}
    assert {"kafka", "hdfs", "flink", "mlflow", "airflow", "paramserver"} <= chosen


def test_asking_for_the_simulator_brings_what_it_needs_transitively():
    chosen = {s.name for s in _select(load_config(), ["simulator"])}
    assert chosen == {"simulator", "model-server", "kafka", "mlflow", "paramserver", "hdfs", "kerberos"}


def test_the_demo_folder_reaches_the_loop_programs(tmp_path):
    cfg = with_data(load_config(), tmp_path / "ml")
    progs = {p.name: p for s in services(cfg) for p in s.programs}
    assert progs["model-server"].env["FLYWHEEL__SERVING__CATALOGUE"] == str(tmp_path / "ml")
    assert progs["simulator"].env["FLYWHEEL__SIMULATOR__DATA"] == str(tmp_path / "ml")
    cfg = cfg.model_copy(update={"stack": cfg.stack.model_copy(update={"state_dir": tmp_path / "state"})})
    conf = render(cfg, services(cfg)).read_text()
    assert "[program:online-trainer]" in conf and f'FLYWHEEL__SERVING__CATALOGUE="{tmp_path / "ml"}"' in conf


def test_a_loop_service_nobody_started_is_off_not_down():
    assert ServiceStatus("simulator", False, "", {"simulator": "STOPPED"}, 0, on_demand=True).off
    assert not ServiceStatus("simulator", False, "", {"simulator": "FATAL"}, 0, on_demand=True).off
    assert not ServiceStatus("kafka", False, "", {"kafka": "STOPPED"}, 0).off
