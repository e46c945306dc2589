"""Kafka's ACLs (``kafka.acls``): each component logs in as its own user and may do only what it
does; the stack's own tools (topics, health of the stack, reconciliation, tests) log in as
``kafka.user``, the super user.

=============  ===========================================================================
user           allowed (topic and group names from the config in use)
=============  ===========================================================================
serving        write ``serving.features_topic`` and ``serving.actions_topic`` (idempotent)
joiner         read ``joiner.features_topic``, ``joiner.actions_topic``; write
               ``joiner.dead_letter_topic``; read and write ``joiner.examples_topic`` (the
               landing reads it back); groups and transactional ids prefixed ``joiner.group``
trainer        read ``joiner.examples_topic`` in group ``online.group``
paramserver    read and write ``paramserver.deltas_topic`` (training ships, serving applies)
monitor        describe the topics and groups ``stream_health`` checks; read
               ``joiner.examples_topic`` (its freshness)
=============  ===========================================================================

Reading or writing a topic lets a user describe it too (Kafka's implied operations); an
idempotent producer needs no cluster grant since Kafka 3.0 (KIP-679). :func:`ensure` adds the
grants of a config (``make up``, compose's stack-init), and with ``prune`` takes back every
grant of those users that the config no longer names.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from flywheel.config import FlywheelConfig
from flywheel.secrets import KAFKA_ROLES, kafka_args


@dataclass(frozen=True, order=True)
class Grant:
    user: str
    resource: str  # TOPIC, GROUP or TRANSACTIONAL_ID (kafka.admin.ResourceType)
    name: str
    operation: str  # READ, WRITE or DESCRIBE (kafka.admin.ACLOperation)
    prefixed: bool = False  # the name is a prefix


def grants(cfg: FlywheelConfig) -> set[Grant]:
    """What each role may do under ``cfg``."""
    j, s, o, ps = cfg.joiner, cfg.serving, cfg.online, cfg.paramserver
    wanted = {
        "serving": [("TOPIC", s.features_topic, "WRITE"), ("TOPIC", s.actions_topic, "WRITE")],
        "joiner": [("TOPIC", j.features_topic, "READ"), ("TOPIC", j.actions_topic, "READ"),
                   ("TOPIC", j.examples_topic, "WRITE"), ("TOPIC", j.examples_topic, "READ"),
                   ("TOPIC", j.dead_letter_topic, "WRITE"),
                   ("GROUP", j.group, "READ", True), ("TRANSACTIONAL_ID", j.group, "WRITE", True)],
        "trainer": [("TOPIC", j.examples_topic, "READ"), ("GROUP", o.group, "READ")],
        "paramserver": [("TOPIC", ps.deltas_topic, "READ"), ("TOPIC", ps.deltas_topic, "WRITE")],
        "monitor": [("TOPIC", j.features_topic, "DESCRIBE"), ("TOPIC", j.actions_topic, "DESCRIBE"),
                    ("TOPIC", j.examples_topic, "READ"), ("GROUP", j.group, "DESCRIBE", True),
                    ("GROUP", o.group, "DESCRIBE")],
    }
    assert set(wanted) == set(KAFKA_ROLES)
    return {Grant(user, *grant) for user, items in wanted.items() for grant in items}


def _acl(grant: Grant):
    from kafka.admin import (ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern,
                             ResourceType)

    pattern = ACLResourcePatternType.PREFIXED if grant.prefixed else ACLResourcePatternType.LITERAL
    return ACL(f"User:{grant.user}", "*", ACLOperation[grant.operation], ACLPermissionType.ALLOW,
               ResourcePattern(ResourceType[grant.resource], grant.name, pattern))


def _grant(acl) -> Grant:
    pattern = acl.resource_pattern
    return Grant(acl.principal.removeprefix("User:"), pattern.resource_type.name, pattern.resource_name,
                 acl.operation.name, pattern.pattern_type.name == "PREFIXED")


def current(admin) -> set[Grant]:
    """The grants the broker holds for the roles' users (ALLOW, any host; describe_acls raises on
    a broker error)."""
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePatternFilter, \
        ResourceType

    held: set[Grant] = set()
    for role in KAFKA_ROLES:  # the ALLOW grants for any host: the only kind ensure() makes
        acls, _ = admin.describe_acls(ACLFilter(f"User:{role}", "*", ACLOperation.ANY, ACLPermissionType.ALLOW,
                                                ResourcePatternFilter(ResourceType.ANY, None,
                                                                      ACLResourcePatternType.ANY)))
        held |= {_grant(acl) for acl in acls}
    return held


@contextmanager
def _admin(cfg: FlywheelConfig):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**kafka_args(cfg), client_id="flywheel-acls")
    try:
        yield admin
    finally:
        admin.close()


def _add(admin, held: set[Grant], wanted: set[Grant]) -> int:
    missing = sorted(wanted - held)
    if missing:
        result = admin.create_acls([_acl(g) for g in missing])
        if result["failed"]:
            raise RuntimeError(f"Kafka refused ACLs: {result['failed']!r}")
    return len(missing)


def allow(cfg: FlywheelConfig, extra: set[Grant]) -> int:
    """Add ``extra`` grants (e.g. a topic given on a command line rather than in the config), as
    ``kafka.user``; how many the broker lacked."""
    if not cfg.kafka.acls:
        return 0
    with _admin(cfg) as admin:
        return _add(admin, current(admin), extra)


def ensure(cfg: FlywheelConfig, prune: bool = False) -> dict[str, int]:
    """Add the grants of ``cfg`` the broker lacks (as ``kafka.user``); with ``prune`` also delete
    the roles' grants ``cfg`` does not name. Returns how many were added and deleted."""
    if not cfg.kafka.acls:
        return {"added": 0, "deleted": 0}
    with _admin(cfg) as admin:
        held, wanted = current(admin), grants(cfg)
        added = _add(admin, held, wanted)
        stale = sorted(held - wanted) if prune else []
        if stale:  # an ACL is also the filter that matches exactly itself
            failed = [(acl_filter, error) for acl_filter, _, error in admin.delete_acls([_acl(g) for g in stale])
                      if error.errno]
            if failed:
                raise RuntimeError(f"Kafka did not delete ACLs: {failed!r}")
        return {"added": added, "deleted": len(stale)}
