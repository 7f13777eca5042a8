"""Paillier batches on a real Dask cluster (a LocalCluster: 2 worker processes on loopback), with
real 2048-bit keys: the cluster path gives what the local path gives, never repeats randomness,
falls back to the local pool when the executor fails, and a node refuses to start on a cluster
that does not answer."""

from __future__ import annotations

import logging
import socket
from concurrent.futures import Executor, Future
from typing import Any, Iterator

import pytest

import veil
from veil.crypto import PackingLayout, decrypt_packed, dot, encrypt_packed, generate_keypair, pool
from veil.crypto.cluster import ClusterUnavailable, DaskExecutor, TlsFiles, connect
from veil_server.config import ConfigError, load_config
from veil_server.cli.demo import init_node_folder
from veil_server.api.server import run_server

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as local:
        yield local


@pytest.fixture(scope="module")
def url(cluster) -> str:
    return "dask://" + cluster.scheduler_address.removeprefix("tcp://")


@pytest.fixture(scope="module")
def dask_executor(url: str) -> Iterator[DaskExecutor]:
    ex = connect(url, connect_timeout=10)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(2048)


class Counting(Executor):
    """Delegates to another executor and counts the chunks it was given."""

    def __init__(self, inner: Executor, parallelism: int = 2) -> None:
        self.inner, self.parallelism, self.calls = inner, parallelism, 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.calls += 1
        return self.inner.submit(fn, *args, **kwargs)


class Failing(Executor):
    parallelism = 2

    def submit(self, fn, /, *args, **kwargs) -> Future:
        raise OSError("the scheduler went away")


class Silent(Executor):
    """Accepts work and never answers: a cluster that lost every worker."""

    parallelism = 2
    timeout = 0.5

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return Future()


def test_cluster_results_equal_the_local_path(dask_executor, keys) -> None:
    pk, sk = keys
    assert dask_executor.parallelism == 2
    values = [(-1) ** i * (i * 7919) % 10**12 for i in range(600)]
    on_cluster = pk.encrypt_many(values, executor=dask_executor)
    local = pk.encrypt_many(values, workers=1)
    assert sk.decrypt_many(on_cluster, workers=1) == values == sk.decrypt_many(local, workers=1)
    assert len({c.value for c in on_cluster + local}) == 2 * len(values)  # fresh randomness everywhere
    # Decryption on the cluster (p and q cross: an executor passed to this very call only).
    assert sk.decrypt_many(local, executor=dask_executor) == values
    # Encrypted dot product: the multi-exponentiation split in two chunks over the workers.
    scalars = [(i % 17) - 8 for i in range(len(values))]
    expected = sum(v * x for v, x in zip(values, scalars))
    assert sk.decrypt(dot(on_cluster, scalars, executor=dask_executor, workers=2)) == expected
    assert sk.decrypt(dot(on_cluster, scalars, workers=1)) == expected
    # Packed cells, as a node releases them.
    layout = PackingLayout.for_range(pk, 0, 10**9)
    cells = [i * 1_000_003 % 10**9 for i in range(3000)]
    cts = encrypt_packed(pk, cells, layout, executor=dask_executor)
    assert decrypt_packed(sk, cts, layout, len(cells), executor=dask_executor) == cells


def test_a_memoising_executor_never_repeats_randomness(cluster, keys) -> None:
    """Dask's own ``client.get_executor()`` keys tasks by their arguments (pure=True): equal
    chunks of one batch, or a repeated batch, would come back as the same ciphertexts but for
    the nonce each encryption chunk carries."""
    pk, sk = keys
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        memoising = client.get_executor()
        zeros = [0] * 600
        first = pk.encrypt_many(zeros, executor=memoising, workers=2)  # two identical chunks
        again = pk.encrypt_many(zeros, executor=memoising, workers=2)
    assert len({c.value for c in first + again}) == 1200
    assert set(sk.decrypt_many(first + again, workers=1)) == {0}


def test_default_executor_takes_public_key_work_only(dask_executor, keys) -> None:
    pk, sk = keys
    counting = Counting(dask_executor)
    layout = PackingLayout.for_range(pk, 0, 10**6)
    cells = list(range(30_000))  # ~340 packed ciphertexts: above PARALLEL_MIN_ITEMS
    with pool.executor_scope(counting):
        cts = encrypt_packed(pk, cells, layout)  # workers=None, as the node's release does
        assert counting.calls == 2
        assert decrypt_packed(sk, cts, layout, len(cells)) == cells  # p and q stay here
        assert counting.calls == 2
        pk.encrypt_many(cells[:10])  # too small to ship
        assert counting.calls == 2
    assert pool.default_executor() is None


@pytest.mark.parametrize("broken", [Failing(), Silent()], ids=["raises", "never-answers"])
def test_a_failing_executor_falls_back_to_the_local_pool(broken, keys, caplog) -> None:
    pk, sk = keys
    values = list(range(-150, 150))
    with caplog.at_level(logging.WARNING, logger="veil.crypto.pool"):
        cts = pk.encrypt_many(values, executor=broken)
        assert sk.decrypt_many(cts, executor=broken) == values
    assert "batch recomputed on the local pool" in caplog.text
    assert "went away" not in caplog.text  # the exception's type is logged, never its text


def test_unreachable_cluster_is_a_clear_error() -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterUnavailable, match=f"127.0.0.1:{port} did not answer within 1 s"):
        connect(f"dask://127.0.0.1:{port}", connect_timeout=1)
    with pytest.raises(ValueError, match="plaintext dask:// is for a cluster on this host only"):
        connect("dask://10.1.2.3:8786")
    with pytest.raises(ValueError, match="needs the CA"):
        connect("dask+tls://10.1.2.3:8786")


def _node_folder(tmp_path, executor: str, extra: str = ""):
    tokens = init_node_folder(tmp_path / "node", rows=3_000, disclosure="exact")
    config = tmp_path / "node" / "veil.toml"
    config.write_text(config.read_text() + f'\n[crypto]\nexecutor = "{executor}"\nconnect_timeout_seconds = 2\n{extra}')
    return load_config(config, env={}), tokens


def test_node_runs_its_encryption_on_the_configured_cluster(tmp_path, url, analyst_home) -> None:
    config, tokens = _node_folder(tmp_path, url)
    with run_server(config, listen="127.0.0.1:0", grace=1) as running:
        installed = pool.default_executor()
        assert isinstance(installed, DaskExecutor) and installed.address == url.replace("dask://", "tcp://")
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            df = alice.query("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", purpose="research")
        assert int(df["n"].sum()) == 3_000
    assert pool.default_executor() is None  # the node's scope ends with it


def test_node_refuses_to_start_on_an_unreachable_cluster(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config, _ = _node_folder(tmp_path, f"dask://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=r"crypto.executor: .* within 2 s \(OSError\); start the cluster"):
        with run_server(config, listen="127.0.0.1:0", grace=1):
            pass
    assert pool.default_executor() is None


def test_tls_cluster_end_to_end(tmp_path, keys, analyst_home) -> None:
    """Mutual TLS on every comm (Dask's own temporary CA): the batch runs, a plaintext client is
    turned away, and a node configured with the certificates serves over it."""
    from distributed.security import Security

    security = Security.temporary()
    pem = {"ca.pem": security.tls_ca_file, "node.pem": security.tls_client_cert,
           "node.key": security.tls_client_key or security.tls_client_cert}
    for name, text in pem.items():
        (tmp_path / name).write_text(text)
    tls = TlsFiles(tmp_path / "ca.pem", tmp_path / "node.pem", tmp_path / "node.key")
    pk, sk = keys
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  protocol="tls://", security=security, dashboard_address=":0") as local:
        hostport = local.scheduler_address.removeprefix("tls://")
        ex = connect(f"dask+tls://{hostport}", tls=tls)
        try:
            values = list(range(-150, 150))
            assert sk.decrypt_many(pk.encrypt_many(values, executor=ex), executor=ex) == values
        finally:
            ex.shutdown()
        with pytest.raises(ClusterUnavailable):
            connect(f"dask://{hostport}", connect_timeout=2)
        config, tokens = _node_folder(tmp_path, f"dask+tls://{hostport}",
                                      'tls_ca = "../ca.pem"\ntls_cert = "../node.pem"\ntls_key = "../node.key"\n')
        with run_server(config, listen="127.0.0.1:0", grace=1) as running:
            assert pool.default_executor().address == f"tls://{hostport}"
            with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
                df = alice.query("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", purpose="research")
            assert int(df["n"].sum()) == 3_000
