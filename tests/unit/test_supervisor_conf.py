"""supervisord's environment= parser keeps quotes without escapes: values must survive it."""

import pytest
from supervisor.datatypes import dict_of_key_value_pairs

from flywheel.stack.supervisor import _env_value


@pytest.mark.parametrize("value", [
    "/plain/path", "a,b,c", '{"conn_type": "spark", "host": "local[2]"}', "50%", "with space",
])
def test_env_values_round_trip_through_supervisord_parser(value):
    parsed = dict_of_key_value_pairs(f"A={_env_value(value)},B={_env_value('x')}")
    # supervisord expands %(ENV_x)s later; %% is its escape for a literal %
    assert parsed == {"A": value.replace("%", "%%"), "B": "x"}


def test_mixed_quotes_are_refused():
    with pytest.raises(ValueError, match="mixed quotes"):
        _env_value("""it's "quoted\"""")


def test_programs_off_the_feed_path_run_niced(tmp_path):
    import configparser

    from flywheel.config import load_config
    from flywheel.stack import loop, paramserver
    from flywheel.stack.supervisor import render

    cfg = load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path)})
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(render(cfg, [paramserver.service(cfg), *loop.services(cfg)]))
    commands = {s.split(":", 1)[1]: conf[s]["command"] for s in conf.sections() if s.startswith("program:")}
    niced = {name for name, command in commands.items() if command.startswith("nice -n 10 ")}
    assert niced == set(commands) - {"model-server", "ps-serving-0"} and "online-trainer" in niced
    off = load_config(files=[], environ={"FLYWHEEL__STACK__STATE_DIR": str(tmp_path), "FLYWHEEL__STACK__BACKGROUND_NICE": "0"})
    conf.read(render(off, [paramserver.service(off)]))
    assert not conf["program:ps-training-0"]["command"].startswith("nice")
