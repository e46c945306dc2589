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
