#!/usr/bin/env bash
# Installs what the tests need, idempotently: the reference programs from
# Debian's packages (Prometheus, promtool, Alertmanager, node_exporter,
# VictoriaMetrics), Chromium and chromedriver (the web UI's browser tests),
# podman set up as testbed.md describes (runc, k8s-file
# logs, a registry-free busybox image `localhost/bb:1`), a Python venv with
# push clients (OpenTelemetry SDK, python-logging-loki), and the Rust
# components (rustfmt, clippy; cargo-fuzz when the nightly toolchain is
# there). Safe to run again; skips what is present.
set -euo pipefail

need_pkgs=()
for pair in prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
            prometheus-node-exporter:prometheus-node-exporter victoria-metrics:victoria-metrics vmalert:victoria-metrics \
            podman:podman runc:runc catatonit:catatonit busybox:busybox-static \
            openssl:openssl htpasswd:apache2-utils chromium:chromium chromedriver:chromium-driver; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need_pkgs[@]}" | sort -u) >/dev/null
fi

# podman: runc (crun fails on this hybrid hierarchy), k8s-file logs, ulimits
# that need no raising.
mkdir -p /etc/containers
if ! grep -q 'runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
CONF
fi

# A container image without a registry: static busybox.
if ! podman image exists localhost/bb:1 2>/dev/null; then
  r=$(mktemp -d)
  mkdir -p "$r/bin"
  cp /bin/busybox "$r/bin/"
  for c in sh echo sleep cat seq yes dd head; do ln -s busybox "$r/bin/$c"; done
  tar -C "$r" -cf "$r.tar" .
  (cd "$r" && podman import "$r.tar" localhost/bb:1 >/dev/null)
  rm -rf "$r" "$r.tar"
fi

# A Python venv with real push clients for the push tests: the OpenTelemetry
# SDK with its OTLP exporters (HTTP and gRPC), python-logging-loki, and
# kubernetes-validate for the manifests. The
# tests find it through VIGIL_TEST_VENV (default /opt/vigil-test-venv).
venv=${VIGIL_TEST_VENV:-/opt/vigil-test-venv}
py_pkgs=(opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
         opentelemetry-exporter-otlp-proto-grpc==1.45.2 python-logging-loki==0.3.1
         kubernetes-validate==1.37.0)
if ! "$venv/bin/python" -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc, logging_loki, kubernetes_validate' 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  echo "creating the test venv $venv: ${py_pkgs[*]}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${py_pkgs[@]}"
fi

command -v rustup >/dev/null 2>&1 && { cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt; }
command -v rustup >/dev/null 2>&1 && { cargo clippy --version >/dev/null 2>&1 || rustup component add clippy; }
# cargo-fuzz for scripts/fuzz.sh, when the nightly toolchain is there (no
# other toolchain can be fetched here; fuzz.sh skips cleanly without it).
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
echo "test dependencies ready"
