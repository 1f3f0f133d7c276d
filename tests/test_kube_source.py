"""The Kubernetes source against a fake kube-apiserver speaking the real protocol over HTTPS.

The client (kubernetes_asyncio) reaches the fake through a real kubeconfig file, or through
the in-cluster service-account files and environment; every count below is exact.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sipwatch.model import LogChunk, Stream
from sipwatch.sources.kubernetes import (
    KubeAccess,
    KubernetesLogSource,
    KubernetesSourceError,
    PodTarget,
)
from tests.fake_kube import (
    FakeKubeApiServer,
    FakePod,
    TlsFiles,
    parse_rfc3339,
    rfc3339nano,
    rfc3339nano_fixed,
    write_kubeconfig,
)
from tests.source_support import Collector

DRACHTIO = PodTarget("drachtio", "app=jambonz-sbc-sip", "drachtio")
REGISTRAR = PodTarget("registrar", "app=sbc-register", "sbc-registrar")
SBC_LABELS = {"app": "jambonz-sbc-sip", "release": "jambonz"}
REG_LABELS = {"app": "sbc-register"}
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def sbc_pod(kube: FakeKubeApiServer, name: str = "jambonz-sbc-sip-x7k2p", **kw: Any) -> FakePod:
    return kube.add_pod(name, SBC_LABELS, ["drachtio", "sbc-options-handler"], **kw)


def make_source(
    kubeconfig: Path, targets: list[PodTarget] | None = None, **kw: Any
) -> KubernetesLogSource:
    kw.setdefault("idle_flush", 0.2)
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.3)
    kw.setdefault("tail", "all")
    access = kw.pop("access", None) or KubeAccess(kubeconfig=str(kubeconfig), environ={})
    return KubernetesLogSource(targets or [DRACHTIO, REGISTRAR], access=access, **kw)


# ------------------------------------------------------------------- the fake itself


async def test_fake_apiserver_speaks_the_real_protocol(
    kube: FakeKubeApiServer, kube_tls: TlsFiles
) -> None:
    pod = sbc_pod(kube)
    kube.log(pod, "drachtio", "one\n", ts_ns=T0 + 500_000_000)
    kube.log(pod, "drachtio", "two\n", ts_ns=T0 + 1_500_000_000)
    ctx = ssl.create_default_context(cafile=str(kube_tls.ca))
    auth = {"Authorization": f"Bearer {kube.token}"}
    base = kube.url + "/api/v1/namespaces/jambonz/pods"
    async with asyncio.timeout(10), aiohttp.ClientSession() as s:
        async with s.get(base, ssl=ctx) as r:
            assert r.status == 401
            assert (await r.json())["kind"] == "Status"
        async with s.get(base, headers=auth, ssl=ctx, params={"labelSelector": "app=x"}) as r:
            listing = await r.json()
            assert listing["kind"] == "PodList" and listing["items"] == []
            rv = listing["metadata"]["resourceVersion"]
        # since is inclusive and cut to whole seconds; timestamps are fixed width
        params = {
            "container": "drachtio",
            "timestamps": "true",
            "sinceTime": "2026-01-01T00:00:01.9Z",
        }
        async with s.get(f"{base}/{pod.name}/log", headers=auth, ssl=ctx, params=params) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            assert await r.text() == f"{rfc3339nano_fixed(T0 + 1_500_000_000)} two\n"
        # a watch from an old resourceVersion after compaction: 410 Expired
        sbc_pod(kube, "jambonz-sbc-sip-later")
        kube.compact()
        params = {"watch": "true", "resourceVersion": rv}
        async with s.get(base, headers=auth, ssl=ctx, params=params) as r:
            assert r.status == 410
            assert (await r.json())["reason"] == "Expired"
        kube.deny("get", "pods/log")
        async with s.get(f"{base}/{pod.name}/log", headers=auth, ssl=ctx) as r:
            assert r.status == 403
            status = await r.json()
            assert status["reason"] == "Forbidden" and 'subresource "log"' in status["message"]
    assert rfc3339nano(T0 + 100) == "2026-01-01T00:00:00.0000001Z"  # containerd's variable width
    assert parse_rfc3339("2026-01-01T00:00:00.0000001Z") == T0 + 100


# ------------------------------------------------------------------------ the source


async def test_follows_each_pod_as_its_own_source_with_its_node(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    sbc1 = sbc_pod(kube, "jambonz-sbc-sip-aaaaa", node="sbc-1")
    sbc2 = sbc_pod(kube, "jambonz-sbc-sip-bbbbb", node="sbc-2")
    reg = kube.add_pod("sbc-register-5d9f-xq2", REG_LABELS, ["sbc-registrar"], node="core-1")
    other = kube.add_pod("mysql-0", {"app": "mysql"}, ["mysql"], node="core-1")
    kube.log(other, "mysql", "not ours\n")
    for i in range(30):
        kube.log(sbc1, "drachtio", f"a{i}\n")
        kube.log(sbc2, "drachtio", f"b{i}\n", stream="stdout")
        kube.log(sbc1, "sbc-options-handler", "options handler, not followed\n")
        kube.log(reg, "sbc-registrar", f'{{"msg":"r{i}"}}\n', stream="stdout")
    statuses: list[tuple[str, bool]] = []
    src = make_source(kubeconfig, on_status=lambda k, up: statuses.append((k, up)))
    async with asyncio.timeout(20), Collector(src) as col:
        assert await col.wait_lines(30, source=sbc1.name) == [f"a{i}" for i in range(30)]
        assert await col.wait_lines(30, source=sbc2.name) == [f"b{i}" for i in range(30)]
        assert await col.wait_lines(30, source=reg.name) == [f'{{"msg":"r{i}"}}' for i in range(30)]
        await col.wait_for(lambda: ("kubernetes:registrar", True) in statuses)
    assert {c.node for c in col.data(source=sbc1.name)} == {"sbc-1"}
    assert {c.node for c in col.data(source=sbc2.name)} == {"sbc-2"}
    assert {c.node for c in col.data(source=reg.name)} == {"core-1"}
    assert {c.source for c in col.data()} == {sbc1.name, sbc2.name, reg.name}
    assert {c.stream for c in col.data()} == {Stream.TEXT}
    assert ("kubernetes:drachtio", True) in statuses
    # the requests were the documented ones: follow + timestamps for the chosen container
    log_queries = [q for path, q in kube.requests if path.endswith("/log")]
    assert all(q["follow"] == "true" and q["timestamps"] == "true" for q in log_queries)
    assert {q["container"] for q in log_queries} == {"drachtio", "sbc-registrar"}


async def test_partial_entries_are_joined_and_streams_merged(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    pod = sbc_pod(kube)
    long_line = "x" + "é" * 20000 + "end\r"  # 40 KiB: three CRI entries, a cut inside é
    entries = kube.log(pod, "drachtio", long_line + "\n")
    assert [e.partial for e in entries] == [True, True, False]
    kube.log(pod, "drachtio", "REGISTER sip:example.com SIP/2.0\r\n", stream="stdout")
    kube.log(pod, "drachtio", "after\n")
    async with asyncio.timeout(20), Collector(make_source(kubeconfig, [DRACHTIO])) as col:
        lines = await col.wait_lines(3)
    assert lines == [long_line, "REGISTER sip:example.com SIP/2.0\r", "after"]


async def test_stream_dropped_mid_line_loses_and_repeats_nothing(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    """Drops in the middle of a line, with several entries per timestamp and a sinceTime the
    API cuts to whole seconds: every line exactly once, in order."""
    pod = sbc_pod(kube)
    expected: list[str] = []

    def emit(text: str, ts: int | None = None) -> None:
        kube.log(pod, "drachtio", text + "\n", ts_ns=ts)
        expected.append(text)

    for i in range(40):
        emit(f"before-{i}")
    same = kube.next_ts()
    for i in range(4):
        emit(f"same-ts-{i}", same)
    async with asyncio.timeout(30), Collector(make_source(kubeconfig, [DRACHTIO])) as col:
        await col.wait_lines(len(expected), settle=0)
        for round_ in range(6):
            kube.cut_next_log_write()
            for i in range(25):
                emit(f"r{round_}-{i}-{'y' * (i * 7)}")
            await col.wait_for(lambda r=round_: kube.cuts == r + 1)  # type: ignore[misc]
        lines = await col.wait_lines(len(expected), settle=0.8)
    assert lines == expected
    assert kube.log_requests >= 7  # really re-opened after each cut
    since = [q.get("sinceTime") for p, q in kube.requests if p.endswith("/log")][1:]
    assert since and all(s is not None and s.endswith("Z") and "." not in s for s in since)


async def test_pod_replaced_by_a_new_pod_with_the_same_labels(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    old = sbc_pod(kube, "jambonz-sbc-sip-old11", node="sbc-1")
    kube.log(old, "drachtio", "old 1\nold 2\n")
    src = make_source(kubeconfig, [DRACHTIO], tail="0")
    async with asyncio.timeout(30), Collector(src) as col:
        await col.wait_for(lambda: kube.open_log_streams == 1)
        kube.log(old, "drachtio", "old 3\n")
        assert await col.wait_lines(1, source=old.name) == ["old 3"]
        new = kube.replace_pod(old, "jambonz-sbc-sip-new22", node="sbc-2")
        kube.log(new, "drachtio", "new 1\nnew 2\n")  # before the source had a chance to look
        assert await col.wait_lines(2, source=new.name) == ["new 1", "new 2"]
        await col.wait_for(lambda: kube.open_log_streams == 1)  # the old follower ended
        kube.log(new, "drachtio", "new 3\n")
        assert (await col.wait_lines(3, source=new.name))[-1] == "new 3"
    assert col.lines(source=old.name) == ["old 3"]
    assert {c.node for c in col.data(source=new.name)} == {"sbc-2"}


async def test_container_restart_and_a_cut_stream_before_it(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    """A restart after a cut: the rest of the old instance comes from ``previous=true``."""
    pod = sbc_pod(kube)
    expected: list[str] = []

    def emit(text: str) -> None:
        kube.log(pod, "drachtio", text + "\n")
        expected.append(text)

    for i in range(10):
        emit(f"run0-{i}")
    async with asyncio.timeout(30), Collector(make_source(kubeconfig, [DRACHTIO])) as col:
        await col.wait_lines(10, settle=0)
        kube.restart_container(pod, "drachtio")  # clean: the old stream drains and ends
        for i in range(10):
            emit(f"run1-{i}")
        await col.wait_lines(len(expected), settle=0)
        await kube.pause_api()  # cut while lines keep coming, then the container restarts
        for i in range(10):
            emit(f"run1-late-{i}")
        kube.restart_container(pod, "drachtio")
        for i in range(10):
            emit(f"run2-{i}")
        await asyncio.sleep(0.3)
        await kube.resume_api()
        lines = await col.wait_lines(len(expected), settle=0.8)
    assert lines == expected
    assert any(q.get("previous") == "true" for p, q in kube.requests if p.endswith("/log"))


@pytest.mark.parametrize("as_event", [False, True], ids=["http-410", "error-event-410"])
async def test_expired_watch_relists(
    kube: FakeKubeApiServer, kubeconfig: Path, as_event: bool
) -> None:
    kube.expired_as_event = as_event
    first = sbc_pod(kube, "jambonz-sbc-sip-first")
    src = make_source(kubeconfig, [DRACHTIO])
    async with asyncio.timeout(30), Collector(src) as col:
        await col.wait_for(lambda: kube.open_watches == 1 and kube.open_log_streams == 1)
        await kube.pause_api()  # the watch breaks; meanwhile a pod appears, history compacts
        second = sbc_pod(kube, "jambonz-sbc-sip-second")
        kube.log(second, "drachtio", "from the second pod\n")
        kube.compact()
        await kube.resume_api()
        assert await col.wait_lines(1, source=second.name) == ["from the second pod"]
        kube.log(first, "drachtio", "first still followed\n")
        assert await col.wait_lines(1, source=first.name) == ["first still followed"]
    lists = [q for p, q in kube.requests if p.endswith("/pods") and "watch" not in q]
    assert len(lists) == 2  # the initial list and the one after 410
    watches = [q for p, q in kube.requests if p.endswith("/pods") and q.get("watch") == "true"]
    assert all(q["labelSelector"] == "app=jambonz-sbc-sip" for q in watches)


async def test_watch_timeout_rewatches_from_the_last_resource_version(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    src = make_source(kubeconfig, [DRACHTIO])
    async with asyncio.timeout(20), Collector(src) as col:
        await col.wait_for(lambda: kube.open_watches == 1)
        kube.bookmark()
        kube.end_watches()
        await col.wait_for(lambda: kube.open_watches == 1 and len(_watches(kube)) == 2)
        pod = sbc_pod(kube)
        kube.log(pod, "drachtio", "hello\n")
        assert await col.wait_lines(1) == ["hello"]
    rv = [q.get("resourceVersion") for q in _watches(kube)]
    assert rv[0] is not None and int(rv[1]) > int(rv[0])  # resumed after the bookmark


def _watches(kube: FakeKubeApiServer) -> list[dict[str, str]]:
    return [q for p, q in kube.requests if p.endswith("/pods") and q.get("watch") == "true"]


async def test_rbac_forbidden_is_reported_and_recovers(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    pod = sbc_pod(kube)
    kube.log(pod, "drachtio", "waiting for rights\n")
    kube.deny("list")
    statuses: list[tuple[str, bool]] = []
    src = make_source(kubeconfig, [DRACHTIO], on_status=lambda k, up: statuses.append((k, up)))
    async with asyncio.timeout(20), Collector(src) as col:
        await col.wait_for(lambda: ("kubernetes:drachtio", False) in statuses)
        await asyncio.sleep(0.3)
        assert col.lines() == []
        kube.allow("list")
        kube.deny("get", "pods/log")
        await col.wait_for(
            lambda: kube.log_requests == 0 and any(p.endswith("/log") for p, _ in kube.requests)
        )
        assert col.lines() == []
        kube.allow("get", "pods/log")
        assert await col.wait_lines(1) == ["waiting for rights"]
        await col.wait_for(lambda: statuses[-1] == ("kubernetes:drachtio", True))


async def test_in_cluster_service_account(
    kube: FakeKubeApiServer, kube_tls: TlsFiles, tmp_path: Path
) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(kube.token)
    (sa / "ca.crt").write_bytes(kube_tls.ca.read_bytes())
    (sa / "namespace").write_text("jambonz\n")
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port)}
    access = KubeAccess(service_account_dir=sa, environ=env)
    assert access.in_cluster()
    pod = sbc_pod(kube)
    kube.log(pod, "drachtio", "in cluster\n")
    src = make_source(tmp_path / "no-kubeconfig", [DRACHTIO], access=access)
    async with asyncio.timeout(20), Collector(src) as col:
        assert await col.wait_lines(1) == ["in cluster"]
    assert not KubeAccess(service_account_dir=sa, environ={}).in_cluster()
    assert not KubeAccess(service_account_dir=tmp_path / "none", environ=env).in_cluster()


async def test_wrong_token_and_missing_configuration(
    kube: FakeKubeApiServer, tmp_path: Path
) -> None:
    bad = write_kubeconfig(tmp_path / "bad", kube, token="not-the-token")
    statuses: list[tuple[str, bool]] = []
    src = make_source(bad, [DRACHTIO], on_status=lambda k, up: statuses.append((k, up)))
    async with asyncio.timeout(20), Collector(src) as col:
        await col.wait_for(lambda: ("kubernetes:drachtio", False) in statuses)
    with pytest.raises(KubernetesSourceError, match="no kubeconfig"):
        async for _ in make_source(tmp_path / "missing", [DRACHTIO]).chunks():
            pass
    garbage = tmp_path / "garbage"
    garbage.write_text("clusters: [")
    with pytest.raises(KubernetesSourceError, match="cannot load"):
        async for _ in make_source(garbage, [DRACHTIO]).chunks():
            pass


async def test_tail_and_since_apply_to_pods_found_at_start(
    kube: FakeKubeApiServer, kubeconfig: Path
) -> None:
    pod = sbc_pod(kube)
    for i in range(5):
        kube.log(pod, "drachtio", f"old{i}\n", ts_ns=T0 + i * 1_000_000_000)
    async with asyncio.timeout(20):
        async with Collector(make_source(kubeconfig, [DRACHTIO], tail="2")) as col:
            assert await col.wait_lines(2) == ["old3", "old4"]
        before = kube.log_requests
        async with Collector(make_source(kubeconfig, [DRACHTIO], tail="0")) as col:
            await col.wait_for(lambda: kube.log_requests > before)  # attached (tail 0)
            kube.log(pod, "drachtio", "new\n")
            assert await col.wait_lines(1) == ["new"]
            # a new pod is read from its first line whatever the tail
            late = sbc_pod(kube, "jambonz-sbc-sip-late1")
            kube.log(late, "drachtio", "late 1\n")
            assert await col.wait_lines(1, source=late.name) == ["late 1"]


async def test_api_outage_and_waiting_pod(kube: FakeKubeApiServer, kubeconfig: Path) -> None:
    pod = sbc_pod(kube)
    waiting = sbc_pod(kube, "jambonz-sbc-sip-creating", waiting=True)
    expected = []
    async with asyncio.timeout(30), Collector(make_source(kubeconfig, [DRACHTIO])) as col:
        for round_ in range(3):
            for i in range(50):
                kube.log(pod, "drachtio", f"{round_}-{i}\n")
                expected.append(f"{round_}-{i}")
            await col.wait_lines(len(expected), settle=0, source=pod.name)
            await kube.pause_api()
            await asyncio.sleep(0.3)
            await kube.resume_api()
        kube.start_containers(waiting)
        kube.log(waiting, "drachtio", "started at last\n")
        assert await col.wait_lines(1, source=waiting.name) == ["started at last"]
        assert await col.wait_lines(len(expected), source=pod.name) == expected


async def test_idle_signal_per_pod_after_quiet(kube: FakeKubeApiServer, kubeconfig: Path) -> None:
    pod = sbc_pod(kube, node="sbc-9")
    src = make_source(kubeconfig, [DRACHTIO], idle_flush=0.2)
    async with asyncio.timeout(20), Collector(src) as col:
        kube.log(pod, "drachtio", "record line 1\n")
        await col.wait_for(lambda: bool(col.chunks) and col.chunks[-1].text == "")
        await asyncio.sleep(0.6)
    empties = [c for c in col.chunks if c.text == ""]
    assert empties == [LogChunk(pod.name, Stream.TEXT, "", "sbc-9")]


def test_pod_json_of_the_fake_is_what_the_source_reads(kube_tls: TlsFiles) -> None:
    from sipwatch.sources.kubernetes import PodInfo

    server = FakeKubeApiServer(token="t", tls=kube_tls)
    pod = server.add_pod("p", SBC_LABELS, ["drachtio"], node="n1")
    info = PodInfo.from_json(json.loads(json.dumps(pod.to_json())), "drachtio")
    assert (info.name, info.node, info.running, info.restart_count) == ("p", "n1", True, 0)
    assert not PodInfo.from_json(pod.to_json(), "other").has_container
