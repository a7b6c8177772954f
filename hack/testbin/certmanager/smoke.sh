#!/usr/bin/env bash
# Smoke test of the built controller: etcd + kube-apiserver + cert-manager-controller
# on 127.0.0.1 free ports; needs hack/testbin.sh etcd kubernetes certmanager built first.
# Stops everything it started (by PID) on exit; leaves its temp dir for the logs.
set -euo pipefail
C=$("$(cd "$(dirname "$0")/../.." && pwd)/testbin.sh" --print)
ETCD=$C/etcd-v3.6.16/bin/etcd
KAS=$C/kubernetes-v1.37.2/bin/kube-apiserver
KUBECTL=$C/kubernetes-v1.37.2/bin/kubectl
CM=$C/certmanager-v1.21.2/bin/cert-manager-controller
CRDS=$C/certmanager-v1.21.2/crds
W=$(mktemp -d); cd "$W"; echo "workdir $W"
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
EP=$(freeport); PP=$(freeport); AP=$(freeport)
PIDS=()
cleanup() { # newest first: controller, apiserver, etcd
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; wait "${PIDS[i]}" 2>/dev/null || true; done
  echo "stopped: ${PIDS[*]}"; }
trap cleanup EXIT

# PKI for the apiserver (serving + client CA) and service accounts
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=kube-ca -keyout kca.key -out kca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kube-apiserver -keyout serving.key -out serving.csr 2>/dev/null
openssl x509 -req -in serving.csr -CA kca.crt -CAkey kca.key -CAcreateserial -days 1 -out serving.crt \
  -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n') 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=system:masters/CN=admin" -keyout admin.key -out admin.csr 2>/dev/null
openssl x509 -req -in admin.csr -CA kca.crt -CAkey kca.key -CAcreateserial -days 1 -out admin.crt \
  -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

cat > admin.kubeconfig <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$AP", certificate-authority: $W/kca.crt}}]
users: [{name: admin, user: {client-certificate: $W/admin.crt, client-key: $W/admin.key}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
KC
k() { "$KUBECTL" --kubeconfig "$W/admin.kubeconfig" "$@"; }

"$ETCD" --name default --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
  --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
  --initial-cluster "default=http://127.0.0.1:$PP" --listen-metrics-urls "" >etcd.log 2>&1 &
PIDS+=($!); echo "etcd pid $! port $EP"

t0=$(date +%s.%N)
"$KAS" \
  --etcd-servers="http://127.0.0.1:$EP" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$AP" \
  --tls-cert-file="$W/serving.crt" --tls-private-key-file="$W/serving.key" \
  --client-ca-file="$W/kca.crt" \
  --service-account-issuer="https://127.0.0.1:$AP" \
  --service-account-key-file="$W/sa.pub" --service-account-signing-key-file="$W/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --authorization-mode=RBAC \
  --endpoint-reconciler-type=none \
  >kas.log 2>&1 &
PIDS+=($!); echo "kube-apiserver pid $! port $AP"
for i in $(seq 1 120); do
  if k get --raw /readyz >/dev/null 2>&1; then break; fi; sleep 0.5
done
k get --raw /readyz >/dev/null
echo "apiserver ready after $(echo "$(date +%s.%N) - $t0" | bc)s"

# CRDs: create (client-side apply fails: the CRDs exceed the 256 KiB last-applied annotation)
k create -f "$CRDS" >/dev/null
k wait --for condition=established --timeout=60s crd --all >/dev/null
k create namespace cert-manager >/dev/null

# CA for the ClusterIssuer, made now
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=smoke-root-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout ca.key -out ca.crt 2>/dev/null
k -n cert-manager create secret tls smoke-ca --cert=ca.crt --key=ca.key >/dev/null

"$CM" --kubeconfig "$W/admin.kubeconfig" --cluster-resource-namespace cert-manager -v=2 >cm.log 2>&1 &
CMPID=$!; PIDS+=($CMPID); echo "cert-manager-controller pid $CMPID"

k apply -f - >/dev/null <<Y
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: smoke-ca}
spec: {ca: {secretName: smoke-ca}}
Y
t1=$(date +%s.%N)
k wait --for=condition=Ready --timeout=60s clusterissuer/smoke-ca
echo "clusterissuer ready after $(echo "$(date +%s.%N) - $t1" | bc)s"

t2=$(date +%s.%N)
k apply -f - >/dev/null <<Y
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: smoke-client, namespace: default}
spec:
  secretName: smoke-client-tls
  commonName: smoke-client
  uris: ["spiffe://example.org/smoke"]
  duration: 24h
  privateKey: {algorithm: ECDSA, size: 256}
  usages: ["digital signature", "client auth"]
  issuerRef: {group: cert-manager.io, kind: ClusterIssuer, name: smoke-ca}
Y
k -n default wait --for=condition=Ready --timeout=60s certificate/smoke-client
echo "certificate ready after $(echo "$(date +%s.%N) - $t2" | bc)s"

k -n default get secret smoke-client-tls -o jsonpath='{.type}{"\n"}'
k -n default get secret smoke-client-tls -o go-template='{{range $k,$v := .data}}{{$k}} {{end}}{{"\n"}}'
k -n default get secret smoke-client-tls -o jsonpath='{.data.tls\.crt}' | base64 -d > leaf.crt
k -n default get secret smoke-client-tls -o jsonpath='{.data.tls\.key}' | base64 -d > leaf.key
openssl verify -CAfile ca.crt leaf.crt
openssl x509 -in leaf.crt -noout -subject -issuer -ext keyUsage,extendedKeyUsage,subjectAltName
openssl pkey -in leaf.key -noout -text | grep -E 'Private-Key|NIST'
[ "$(openssl x509 -in leaf.crt -noout -pubkey | sha256sum)" = "$(openssl pkey -in leaf.key -pubout | sha256sum)" ] && echo "key matches cert"
# namespaced Issuer of type CA, with the CA secret in its own namespace
k -n default create secret tls smoke-ca --cert=ca.crt --key=ca.key >/dev/null
k apply -f - >/dev/null <<Y
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: smoke-ns-ca, namespace: default}
spec: {ca: {secretName: smoke-ca}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: smoke-ns, namespace: default}
spec:
  secretName: smoke-ns-tls
  commonName: smoke-ns
  privateKey: {algorithm: ECDSA, size: 256}
  usages: ["digital signature", "client auth"]
  issuerRef: {kind: Issuer, name: smoke-ns-ca}
Y
k -n default wait --for=condition=Ready --timeout=60s issuer/smoke-ns-ca certificate/smoke-ns
k -n default get secret smoke-ns-tls -o jsonpath='{.data.tls\.crt}' | base64 -d | openssl verify -CAfile ca.crt
k get clusterissuer,issuer,certificate,certificaterequest -A
echo "--- listeners of cert-manager-controller (expect none):"
ss -ltnp | grep "pid=$CMPID," || echo none
echo "--- cm.log errors:"; grep -E '^E' cm.log | head -20 || true
echo SMOKE-OK
