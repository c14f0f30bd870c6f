#!/usr/bin/env bash
# Type-checks driver/ on Linux against SHADOW wdk crates (driver/shadow/*): stand-ins declared with
# the shapes the real bindings have, per DRIVER-NOTES and the upstream samples. It puts the glue's
# Rust (borrows, unsafe rules, engine and proto API use) through rustc; it does NOT show that the
# driver builds against the real WDK, which only the Windows workflow can. Changes nothing in the
# working tree: it checks a copy.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root"/Cargo.toml "$root"/Cargo.lock "$root"/.cargo "$root"/engine "$root"/proto "$root"/driver "$work"/
# Only the crates the driver needs.
sed -i 's/^members = .*/members = ["engine", "proto", "driver", "driver\/wsk"]/; s/^default-members = .*/default-members = ["driver"]/' "$work/Cargo.toml"
cat >> "$work/Cargo.toml" <<'TOML'

[patch.crates-io]
wdk = { path = "driver/shadow/wdk" }
wdk-sys = { path = "driver/shadow/wdk-sys" }
wdk-alloc = { path = "driver/shadow/wdk-alloc" }
wdk-panic = { path = "driver/shadow/wdk-panic" }
wdk-build = { path = "driver/shadow/wdk-build" }
TOML
cd "$work"
# RUSTC_BOOTSTRAP: the engine's try-arc feature (Arc::try_new), as in the real driver build.
export RUSTC_BOOTSTRAP=1
CARGO_TARGET_DIR="$root/target/shadow" cargo clippy --offline -q -p khttp --lib -- -D warnings 2>&1 \
    || CARGO_TARGET_DIR="$root/target/shadow" cargo clippy -q -p khttp --lib -- -D warnings
echo "driver shadow type-check: ok"
