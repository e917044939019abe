"""ctypes binding to librdkafka's mock cluster: an in-process Kafka-protocol broker.

confluent-kafka ships librdkafka, which contains a mock cluster that speaks the real Kafka
protocol on 127.0.0.1. It is the embedded broker for one machine and for tests. Only this
module knows it exists; everything else talks to it as to any cluster, by bootstrap address.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from functools import cache

import confluent_kafka

_RD_KAFKA_PRODUCER = 0
_c = ctypes


class MockClusterError(RuntimeError):
    pass


@cache
def _lib() -> ctypes.CDLL:
    pkg_dir = os.path.dirname(confluent_kafka.__file__)
    bundled = sorted(glob.glob(os.path.join(pkg_dir + ".libs", "librdkafka*.so*")))
    path = bundled[0] if bundled else ctypes.util.find_library("rdkafka")
    if not path:
        raise MockClusterError("librdkafka not found next to confluent_kafka")
    lib = ctypes.CDLL(path)
    _declare(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    vp, i32, cp = _c.c_void_p, _c.c_int32, _c.c_char_p
    sig = {
        "rd_kafka_conf_new": ([], vp),
        "rd_kafka_conf_set": ([vp, cp, cp, cp, _c.c_size_t], _c.c_int),
        "rd_kafka_new": ([_c.c_int, vp, cp, _c.c_size_t], vp),
        "rd_kafka_destroy": ([vp], None),
        "rd_kafka_mock_cluster_new": ([vp, _c.c_int], vp),
        "rd_kafka_mock_cluster_destroy": ([vp], None),
        "rd_kafka_mock_cluster_bootstraps": ([vp], cp),
        "rd_kafka_mock_topic_create": ([vp, cp, _c.c_int, _c.c_int], _c.c_int),
        "rd_kafka_mock_broker_set_down": ([vp, i32], _c.c_int),
        "rd_kafka_mock_broker_set_up": ([vp, i32], _c.c_int),
        "rd_kafka_mock_push_request_errors_array": (
            [vp, _c.c_int16, _c.c_size_t, _c.POINTER(_c.c_int)],
            None,
        ),
        "rd_kafka_mock_clear_request_errors": ([vp, _c.c_int16], None),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": ([vp, i32], None),
    }
    for name, (argtypes, restype) in sig.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype


class MockCluster:
    """A running mock cluster. Data lives in this process's memory and dies with it."""

    def __init__(self, num_brokers: int = 1, rebalance_delay_ms: int = 100) -> None:
        lib = _lib()
        err = _c.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        # The host handle only exists to own the cluster; keep its own logging quiet.
        lib.rd_kafka_conf_set(conf, b"log_level", b"3", err, len(err))
        self._rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, err, len(err))
        if not self._rk:
            raise MockClusterError(f"cannot create host handle: {err.value.decode()}")
        self._mc = lib.rd_kafka_mock_cluster_new(self._rk, num_brokers)
        if not self._mc:
            lib.rd_kafka_destroy(self._rk)
            raise MockClusterError("rd_kafka_mock_cluster_new failed")
        # Real Kafka waits 3 s before the first rebalance; one machine gains nothing by it.
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mc, rebalance_delay_ms)
        self.num_brokers = num_brokers
        self.bootstrap: str = lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()

    def create_topic(self, name: str, partitions: int, replication: int = 1) -> None:
        replication = min(replication, self.num_brokers)
        rc = _lib().rd_kafka_mock_topic_create(self._mc, name.encode(), partitions, replication)
        if rc != 0:
            raise MockClusterError(f"cannot create topic {name}: error {rc}")

    def broker_down(self, broker_id: int) -> None:
        _lib().rd_kafka_mock_broker_set_down(self._mc, broker_id)

    def broker_up(self, broker_id: int) -> None:
        _lib().rd_kafka_mock_broker_set_up(self._mc, broker_id)

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """Make the next len(errors) requests of api_key fail with these Kafka error codes."""
        arr = (_c.c_int * len(errors))(*errors)
        _lib().rd_kafka_mock_push_request_errors_array(self._mc, api_key, len(errors), arr)

    def clear_request_errors(self, api_key: int) -> None:
        _lib().rd_kafka_mock_clear_request_errors(self._mc, api_key)

    def close(self) -> None:
        if self._mc:
            _lib().rd_kafka_mock_cluster_destroy(self._mc)
            self._mc = None
        if self._rk:
            _lib().rd_kafka_destroy(self._rk)
            self._rk = None

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ApiKey:
    """Kafka protocol API keys used for fault injection."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    INIT_PRODUCER_ID = 22
