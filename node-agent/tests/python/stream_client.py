"""The official Python client (kubernetes.stream) against the fake API server.

Usage: stream_client.py https://127.0.0.1:PORT
Prints one JSON object with what each call saw.
"""
import json
import socket
import sys

import urllib3
from kubernetes import client
from kubernetes.stream import portforward, stream

urllib3.disable_warnings()

cfg = client.Configuration()
cfg.host = sys.argv[1]
cfg.verify_ssl = False
cfg.api_key = {"authorization": "Bearer faketoken"}
api = client.CoreV1Api(client.ApiClient(cfg))
out = {}

# exec: stdout, stderr and the exit code from the status channel.
resp = stream(api.connect_get_namespaced_pod_exec, "web", "default",
              command=["sh", "-c", "echo out; echo err >&2; exit 3"],
              stderr=True, stdin=False, stdout=True, tty=False,
              _preload_content=False)
resp.run_forever(timeout=20)
out["exec"] = {"stdout": resp.read_stdout(), "stderr": resp.read_stderr(),
               "rc": resp.returncode, "protocol": resp.subprotocol}

# exec with stdin, offering only v4 (what older clients and kube-rs speak).
resp = stream(api.connect_get_namespaced_pod_exec, "web", "default",
              command=["sh", "-c", "read x; echo got $x"],
              stderr=True, stdin=True, stdout=True, tty=False,
              _preload_content=False,
              _request_timeout=20,
              _headers={"sec-websocket-protocol": "v4.channel.k8s.io"})
resp.write_stdin("hello\n")
resp.run_forever(timeout=20)
out["exec_stdin"] = {"stdout": resp.read_stdout(), "rc": resp.returncode,
                     "protocol": resp.subprotocol}

# port-forward: the websocket channel protocol, ports in the query.
pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "default", ports="80")
sock = pf.socket(80)
sock.setblocking(True)
sock.settimeout(20)
sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
body = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    body += chunk
sock.close()
out["portforward"] = {"response": body.decode(), "error": pf.error(80)}

print(json.dumps(out))
