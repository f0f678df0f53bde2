"""The official Kubernetes Python client against Berth: create, list, patch, watch.

Usage: client.py KUBECONFIG. Exits non-zero with a message on the first failed check.
"""
import sys
import threading

from kubernetes import client, config, watch


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    events = []
    started = threading.Event()

    def watcher():
        w = watch.Watch()
        started.set()
        for ev in w.stream(core.list_namespaced_config_map, "default",
                           label_selector="app=py", timeout_seconds=10):
            events.append((ev["type"], ev["object"].data))
            if len(events) >= 2:
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    started.wait()

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"app": "py"}),
                            data={"a": "1"})
    created = core.create_namespaced_config_map("default", cm)
    assert created.metadata.uid, "created object has no uid"

    items = core.list_namespaced_config_map("default", label_selector="app=py").items
    assert [i.metadata.name for i in items] == ["py"], items

    patched = core.patch_namespaced_config_map("py", "default", {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}, patched.data

    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "py-web", "labels": {"app": "py"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "py"}},
                 "template": {"metadata": {"labels": {"app": "py"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }
    apps.create_namespaced_deployment("default", dep)
    scaled = apps.patch_namespaced_deployment_scale("py-web", "default", {"spec": {"replicas": 3}})
    assert scaled.spec.replicas == 3, scaled
    got = apps.read_namespaced_deployment("py-web", "default")
    assert got.spec.replicas == 3 and got.metadata.generation == 2, got.metadata

    t.join(timeout=15)
    assert [e[0] for e in events] == ["ADDED", "MODIFIED"], events
    assert events[1][1] == {"a": "1", "b": "2"}, events

    try:
        core.read_namespaced_config_map("missing", "default")
        raise AssertionError("reading a missing object succeeded")
    except client.exceptions.ApiException as e:
        assert e.status == 404, e.status

    core.delete_namespaced_config_map("py", "default")
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
