"""The event collector's producer is started afresh after a failed send (serving/app.py): an
idempotent kafka-python producer whose records expired can stay unable to send."""

from serving.app import ActionsProducer


class Made:
    def __init__(self, n):
        self.n, self.closed = n, None

    def close(self, timeout=None):
        self.closed = timeout


def test_a_discarded_producer_is_replaced_and_a_stale_discard_changes_nothing():
    made = []
    producers = ActionsProducer(lambda: made.append(Made(len(made))) or made[-1])
    first = producers.get()
    assert producers.get() is first and len(made) == 1
    producers.discard(first)
    second = producers.get()
    assert second is not first and len(made) == 2
    producers.discard(first)  # a late failure on the old producer: the new one stays
    assert producers.get() is second
    producers.discard(None)  # the producer could not even be made (Kafka down): nothing to drop
    assert producers.get() is second
    producers.close()
    assert second.closed == 10


def test_a_given_producer_is_never_replaced():
    fixed = Made(0)
    producers = ActionsProducer(fixed)
    producers.discard(producers.get())
    assert producers.get() is fixed and fixed.closed is None
