#!/usr/bin/env bash
# Builds the Debian package target/debian/khttp_VERSION-1_ARCH.deb (issue #13, item 4):
# khttpd and khttpctl, the systemd unit, /etc/khttp/khttp.toml (the default site's
# configuration), the default site, the logrotate policy, man pages and bash, zsh and fish
# completions generated from the binaries' own clap definitions.
#
# Why dpkg-deb and not cargo-deb: dpkg-deb is Debian's own tool, on every Debian machine, so
# the package builds without compiling another tool first (cargo-deb is about a hundred crates
# on CI's two cores). The maintainer scripts are ours, in this directory; dpkg-shlibdeps
# computes Depends as Debian's own packages do.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=dist/deb

for tool in dpkg-deb dpkg-shlibdeps objcopy; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq dpkg-dev binutils >/dev/null; }
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
cargo build --release -q -p khttp-host -p khttpctl

out=target/debian
root=$out/root
rm -rf "$root"
mkdir -p "$root/DEBIAN"

install -Dm755 target/release/khttpd "$root/usr/bin/khttpd"
install -Dm755 target/release/khttpctl "$root/usr/bin/khttpctl"
objcopy --strip-unneeded "$root/usr/bin/khttpd"
objcopy --strip-unneeded "$root/usr/bin/khttpctl"
install -Dm644 dist/khttpd.service "$root/lib/systemd/system/khttpd.service"
install -Dm644 dist/khttp-renew.service "$root/lib/systemd/system/khttp-renew.service"
install -Dm644 dist/khttp-renew.timer "$root/lib/systemd/system/khttp-renew.timer"
install -Dm644 dist/khttp.toml "$root/etc/khttp/khttp.toml"
install -Dm644 dist/logrotate "$root/etc/logrotate.d/khttpd"
mkdir -p "$root/usr/share/khttp"
cp -r dist/site "$root/usr/share/khttp/site"
find "$root/usr/share/khttp" -type d -exec chmod 755 {} + -o -type f -exec chmod 644 {} +

man=$root/usr/share/man/man8
mkdir -p "$man"
target/release/khttpd --generate man > "$man/khttpd.8"
target/release/khttpctl generate man "$man"   # khttpctl.8 and a page per subcommand
gzip -9n "$man"/*.8
for bin in khttpd khttpctl; do
    if [ "$bin" = khttpd ]; then gen=(--generate); else gen=(generate); fi
    install -d "$root/usr/share/bash-completion/completions" \
        "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
    target/release/$bin "${gen[@]}" bash > "$root/usr/share/bash-completion/completions/$bin"
    target/release/$bin "${gen[@]}" zsh > "$root/usr/share/zsh/vendor-completions/_$bin"
    target/release/$bin "${gen[@]}" fish > "$root/usr/share/fish/vendor_completions.d/$bin.fish"
done

doc="$root/usr/share/doc/khttp"
install -Dm644 docs/apply.md "$doc/apply.md"
install -Dm644 examples/khttp.toml "$doc/examples/khttp.toml"
cat > "$doc/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: khttp

Files: *
Copyright: 2026 the khttp authors
License: MIT or Apache-2.0
 On Debian systems the Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
printf 'khttp (%s-1) unstable; urgency=medium\n\n  * Package built from the source tree.\n\n -- khttp developers <khttp@example.invalid>  %s\n' \
    "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n > "$doc/changelog.Debian.gz"
chmod 644 "$doc/copyright" "$doc/changelog.Debian.gz"

# Depends, as dpkg-shlibdeps computes it for the binaries (it wants a debian/control).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/debian"
printf 'Source: khttp\n\nPackage: khttp\nArchitecture: any\n' > "$scratch/debian/control"
depends=$(cd "$scratch" && dpkg-shlibdeps -O "-e$OLDPWD/$root/usr/bin/khttpd" "-e$OLDPWD/$root/usr/bin/khttpctl" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: khttp
Version: $version-1
Architecture: $arch
Maintainer: khttp developers <khttp@example.invalid>
Installed-Size: $size
Depends: $depends
Recommends: logrotate
Section: httpd
Priority: optional
Homepage: https://example.invalid/khttp
Description: http.sys-style HTTP accelerator (khttpd and khttpctl)
 khttp answers HTTP/1.1 requests for reserved URL prefixes from a response
 cache, administered with a netsh-like CLI. This package holds khttpd, the
 user-mode server, run as the systemd service khttpd.service, and khttpctl,
 its administration tool. /etc/khttp/khttp.toml declares what it serves; the
 default serves a welcome page on port 80.
CONTROL
printf '/etc/khttp/khttp.toml\n/etc/logrotate.d/khttpd\n' > "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
    install -m755 "$here/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    > "$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control" "$root/DEBIAN/conffiles"

deb="$out/khttp_${version}-1_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
