"""Kafka's ACLs (flywheel/stack/kafka_acls.py): each component logs in as its own user, which the
broker accepts and allows only its grants; the stack's own tools stay the super user."""

import pytest

from flywheel import secrets
from flywheel.config import ConfigError, load_config
from flywheel.stack import kafka_acls
from flywheel.stack.kafka_acls import Grant


@pytest.fixture
def cfg(state_cfg):
    return state_cfg


def test_each_component_logs_in_as_its_own_user_with_its_own_password(cfg):
    logins = {role: secrets.kafka_login(cfg, role) for role in secrets.KAFKA_ROLES}
    assert {role: user for role, (user, _) in logins.items()} == {role: role for role in secrets.KAFKA_ROLES}
    passwords = [password for _, password in logins.values()] + [secrets.kafka_password(cfg)]
    assert len(set(passwords)) == len(passwords)  # one leaked password opens one door
    assert secrets.kafka_args(cfg, "trainer")["sasl_plain_username"] == "trainer"
    assert secrets.kafka_args(cfg)["sasl_plain_username"] == cfg.kafka.user
    with pytest.raises(ValueError, match="no Kafka role 'spark'"):
        secrets.kafka_args(cfg, "spark")
    off = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"acls": False})})
    assert secrets.kafka_login(off, "trainer") == (cfg.kafka.user, secrets.kafka_password(cfg))


def test_the_broker_accepts_every_login_and_authorizes_with_the_super_user_set(cfg, kafka_props):
    props = kafka_props(cfg)
    jaas = props["listener.name.client.plain.sasl.jaas.config"]
    for user, password in secrets.kafka_users(cfg).items():
        assert f'user_{user}="{password}"' in jaas
    assert set(secrets.kafka_users(cfg)) == {cfg.kafka.user, *secrets.KAFKA_ROLES}
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == f"User:{cfg.kafka.user}"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    off = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"acls": False})})
    assert "authorizer.class.name" not in kafka_props(off) and set(secrets.kafka_users(off)) == {cfg.kafka.user}


def test_grants_follow_the_configured_topics_and_groups(cfg):
    granted = kafka_acls.grants(cfg)
    j = cfg.joiner
    assert Grant("serving", "TOPIC", cfg.serving.features_topic, "WRITE") in granted
    assert Grant("trainer", "TOPIC", j.examples_topic, "READ") in granted
    assert Grant("trainer", "GROUP", cfg.online.group, "READ") in granted
    assert Grant("joiner", "TRANSACTIONAL_ID", j.group, "WRITE", prefixed=True) in granted
    assert Grant("paramserver", "TOPIC", cfg.paramserver.deltas_topic, "WRITE") in granted
    # nobody but the joiner writes examples; the monitor writes nothing
    assert {g.user for g in granted if g.name == j.examples_topic and g.operation == "WRITE"} == {"joiner"}
    assert {g.operation for g in granted if g.user == "monitor"} <= {"READ", "DESCRIBE"}
    moved = cfg.model_copy(update={"joiner": j.model_copy(update={"examples_topic": "examples-v2"})})
    assert Grant("trainer", "TOPIC", "examples-v2", "READ") in kafka_acls.grants(moved)


def test_acls_without_logins_or_a_super_user_named_like_a_component_are_config_errors():
    with pytest.raises(ConfigError, match="kafka.acls needs kafka.sasl"):
        load_config(files=[], environ={"FLYWHEEL__KAFKA__SASL": "false"})
    with pytest.raises(ConfigError, match="'trainer' is the name of a component"):
        load_config(files=[], environ={"FLYWHEEL__KAFKA__USER": "trainer"})
    assert not load_config(files=[], environ={"FLYWHEEL__KAFKA__SASL": "false", "FLYWHEEL__KAFKA__ACLS": "false"}).kafka.acls


def test_a_job_submission_reads_only_the_password_of_its_own_login(cfg):
    assert secrets.kafka_user_password(cfg, "joiner") == secrets.kafka_login(cfg, "joiner")[1]
    assert secrets.kafka_user_password(cfg, cfg.kafka.user) == secrets.kafka_password(cfg)
    made = sorted(p.name for p in secrets.folder(cfg).iterdir())
    assert made == ["kafka_password", "kafka_password_joiner"]  # no other role's secret was made
    with pytest.raises(ValueError, match="'nobody' is no Kafka login"):
        secrets.kafka_user_password(cfg, "nobody")
