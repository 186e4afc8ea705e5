#!/bin/sh
# fetch-kernel.sh --out DIR [--package NAME]: the guest kernel, from Debian's
# kernel package, without installing it (its postinst would run initramfs
# hooks on the host). Downloads the .deb with `apt-get download` into
# DIR/cache (kept, so later runs work offline), extracts it, and leaves:
#   DIR/vmlinuz          the bzImage (direct kernel boot on pc/q35)
#   DIR/vmlinux          the uncompressed ELF with its PVH note (microvm)
#   DIR/modules/*.ko     the modules the guest loads, uncompressed
#   DIR/modules/modules.order  their load order ("?" marks optional ones)
#   DIR/version          the kernel release
# A second run with everything in place does nothing.
set -eu

out=
package=
while [ $# -gt 0 ]; do
        case $1 in
        --out) out=$2; shift 2 ;;
        --package) package=$2; shift 2 ;;
        -h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "fetch-kernel: unknown argument $1" >&2; exit 2 ;;
        esac
done
[ -n "$out" ] || { echo "fetch-kernel: --out DIR is required" >&2; exit 2; }

# The modules of the virtio-serial chain, dependencies first (their
# "depends=" lines in .modinfo), then the SNP guest driver, which is optional
# because its init fails with ENODEV outside an SNP guest.
MODULES="drivers/virtio/virtio_ring.ko
drivers/virtio/virtio.ko
drivers/virtio/virtio_pci_legacy_dev.ko
drivers/virtio/virtio_pci_modern_dev.ko
drivers/virtio/virtio_pci.ko
drivers/virtio/virtio_mmio.ko
drivers/char/virtio_console.ko
?drivers/virt/coco/sev-guest/sev-guest.ko"

if [ -s "$out/vmlinuz" ] && [ -s "$out/vmlinux" ] && [ -s "$out/modules/modules.order" ] &&
        [ -s "$out/version" ]; then
        exit 0
fi

mkdir -p "$out/cache"
out=$(cd "$out" && pwd)
if [ -z "$package" ]; then
        # linux-image-amd64 is a metapackage: the real one is its dependency.
        package=$(apt-cache depends linux-image-amd64 2>/dev/null |
                sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
        if [ -z "$package" ]; then
                # Offline: fall back to whatever an earlier run cached.
                deb=$(ls "$out"/cache/linux-image-*.deb 2>/dev/null | tail -n 1)
                [ -n "$deb" ] || { echo "fetch-kernel: cannot resolve linux-image-amd64" >&2; exit 1; }
                package=$(dpkg-deb -f "$deb" Package)
        fi
fi
deb=$(ls "$out"/cache/"$package"_*.deb 2>/dev/null | tail -n 1)
if [ -z "$deb" ]; then
        echo "fetch-kernel: downloading $package"
        # apt drops privileges to _apt, which cannot write a root-owned build tree.
        (cd "$out/cache" && apt-get download -q "$package" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
        deb=$(ls "$out"/cache/"$package"_*.deb 2>/dev/null | tail -n 1)
        [ -n "$deb" ] || { echo "fetch-kernel: apt-get download $package failed" >&2; exit 1; }
fi

tmp=$(mktemp -d "$out/extract.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
release=$(ls "$tmp/lib/modules" | head -n 1)
[ -n "$release" ] || { echo "fetch-kernel: no lib/modules in $deb" >&2; exit 1; }
cp "$tmp/boot/vmlinuz-$release" "$out/vmlinuz.new"

# The bzImage's payload is one compressed stream after the setup code; find
# its magic (xz, else gzip or zstd) and decompress it to get vmlinux.
extract() { # MAGIC DECOMPRESSOR...
        magic=$1
        shift
        off=$(LC_ALL=C grep -abo "$magic" "$out/vmlinuz.new" 2>/dev/null | head -n 1 | cut -d: -f1)
        [ -n "$off" ] || return 1
        tail -c +$((off + 1)) "$out/vmlinuz.new" | "$@" >"$out/vmlinux.new" 2>/dev/null || true
        [ "$(head -c 4 "$out/vmlinux.new" | od -An -c | tr -d ' ')" = '177ELF' ]
}
extract "$(printf '\3757zXZ')" xz -dc --single-stream ||
        extract "$(printf '\037\213\010')" gzip -dc ||
        extract "$(printf '(\265/\375')" zstd -dcq ||
        { echo "fetch-kernel: cannot extract vmlinux from the bzImage" >&2; exit 1; }

rm -rf "$out/modules.new"
mkdir -p "$out/modules.new"
moddir="$tmp/lib/modules/$release/kernel"
printf '%s\n' "$MODULES" | while IFS= read -r line; do
        opt=
        path=$line
        case $line in \?*) opt='?'; path=${line#\?} ;; esac
        name=$(basename "$path")
        if [ -f "$moddir/$path" ]; then
                cp "$moddir/$path" "$out/modules.new/$name"
        elif [ -f "$moddir/$path.xz" ]; then
                xz -dc "$moddir/$path.xz" >"$out/modules.new/$name"
        elif [ -f "$moddir/$path.zst" ]; then
                zstd -dcq "$moddir/$path.zst" >"$out/modules.new/$name"
        elif [ -n "$opt" ]; then
                continue
        else
                # Not a module in this kernel: assume it is built in.
                echo "fetch-kernel: $path not found; assuming it is built in"
                continue
        fi
        echo "$opt$name" >>"$out/modules.new/modules.order"
done
cp "$tmp/boot/config-$release" "$out/config"

rm -rf "$out/modules"
mv "$out/modules.new" "$out/modules"
mv "$out/vmlinux.new" "$out/vmlinux"
mv "$out/vmlinuz.new" "$out/vmlinuz"
echo "$release" >"$out/version"
echo "fetch-kernel: $package ($release) in $out"
