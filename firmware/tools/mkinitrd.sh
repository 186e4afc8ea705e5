#!/bin/sh
# mkinitrd.sh: assembles a guest initrd (a newc cpio, gzipped with --gzip)
# for cvm-init (docs/guest-image.md).
#
# usage: mkinitrd.sh --out FILE --kernel-modules DIR [--init PATH] [--agent PATH]
#                    [--handler PATH] [--file SRC:DST]... [--concurrency N]
#                    [--agent-arg ARG]... [--port-name NAME] [--busybox PATH]
#                    [--gzip] [--no-strip] -- HANDLER_ARGV...
#
#   --kernel-modules DIR  .ko files and their load order, DIR/modules.order
#                         (as fetch-kernel.sh leaves them): /lib/modules, /etc/cvm/modules
#   --init, --agent       cvm-init and the static cvm-agent (default: build/guest/)
#   --handler PATH        installs PATH as /fn/NAME (executable); with no
#                         HANDLER_ARGV the handler is /fn/NAME alone
#   --file SRC:DST        any other file, at the absolute path DST
#   --concurrency N       handlers the agent runs at once (default 1)
#   --agent-arg ARG       an extra agent option (e.g. --max-response=65536)
#   --port-name NAME      the virtio-serial port's name (default org.cvmd.agent)
#   --busybox PATH        a static busybox, /bin/sh and a few applets (default /bin/busybox)
#
# The archive is reproducible: owners are 0, times are SOURCE_DATE_EPOCH (0
# by default) and entries are sorted, so one set of inputs has one launch digest.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
out=
modules=
init="$root/build/guest/cvm-init"
agent="$root/build/guest/cvm-agent"
busybox=/bin/busybox
handler=
files=
concurrency=1
agent_args=
port_name=
compress="cat"
strip=1
nl='
'
die() {
        echo "mkinitrd: $*" >&2
        exit 1
}
need() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
        case $1 in
        --out) need "$@"; out=$2; shift 2 ;;
        --kernel-modules) need "$@"; modules=$2; shift 2 ;;
        --init) need "$@"; init=$2; shift 2 ;;
        --agent) need "$@"; agent=$2; shift 2 ;;
        --busybox) need "$@"; busybox=$2; shift 2 ;;
        --handler) need "$@"; handler=$2; shift 2 ;;
        --file) need "$@"; files="$files$2$nl"; shift 2 ;;
        --concurrency) need "$@"; concurrency=$2; shift 2 ;;
        --agent-arg) need "$@"; agent_args="$agent_args$2$nl"; shift 2 ;;
        --port-name) need "$@"; port_name=$2; shift 2 ;;
        --gzip) compress="gzip -9n"; shift ;;
        --no-strip) strip=0; shift ;;
        --) shift; break ;;
        -h | --help) sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
        esac
done
[ -n "$out" ] || die "--out FILE is required"
[ -n "$modules" ] || die "--kernel-modules DIR is required"
[ -s "$modules/modules.order" ] || die "$modules/modules.order is missing"
for f in "$init" "$agent" "$busybox"; do
        [ -x "$f" ] || die "$f is not an executable"
done
case $concurrency in '' | *[!0-9]*) die "--concurrency: $concurrency is not a number" ;; esac
if [ -n "$handler" ]; then
        [ -f "$handler" ] || die "--handler: $handler is not a file"
        [ $# -gt 0 ] || set -- "/fn/$(basename "$handler")"
fi
[ $# -gt 0 ] || die "no handler: give --handler PATH or a HANDLER_ARGV after --"
# cvm-init reads one argument per line: a newline inside one cannot be said.
for a in "$@"; do
        case $a in *"$nl"*) die "a handler argument contains a newline" ;; esac
done
# The guest has no dynamic loader: a dynamic ELF would fail at every invocation.
for f in "$init" "$agent" "$busybox"; do
        if command -v readelf >/dev/null 2>&1 && readelf -l "$f" 2>/dev/null | grep -q INTERP; then
                die "$f is dynamically linked; the guest needs static executables"
        fi
done

# Every path is made absolute before the staging directory becomes the cwd.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
init=$(abs "$init")
agent=$(abs "$agent")
busybox=$(abs "$busybox")
modules=$(abs "$modules")
out=$(abs "$out")
[ -z "$handler" ] || handler=$(abs "$handler")
cwd=$PWD

stage=$(mktemp -d "${TMPDIR:-/tmp}/cvm-initrd.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cd "$stage"
mkdir -p bin sbin dev proc sys tmp etc/cvm lib/modules fn usr/bin usr/sbin root
chmod 1777 tmp

install_exe() { # SRC DST
        cp "$1" "$2"
        if [ "$strip" = 1 ] && command -v strip >/dev/null 2>&1 &&
                [ "$(head -c 4 "$2" | od -An -c | tr -d ' ')" = '177ELF' ]; then
                strip --strip-all "$2" 2>/dev/null || true
        fi
        chmod 755 "$2"
}
install_exe "$init" init
install_exe "$agent" sbin/cvm-agent
install_exe "$busybox" bin/busybox
# Enough of a userland for shell-script handlers.
for applet in sh ash cat echo printf sleep ls head tail tr wc env true false test [ grep sed \
        cut mkdir rm cp mv date id uname dd od sort uniq xargs expr basename dirname awk; do
        ln -s busybox "bin/$applet"
done

# Modules and their order; "?" (optional) is kept for cvm-init.
: >etc/cvm/modules
while IFS= read -r line; do
        case $line in '' | '#'*) continue ;; esac
        name=${line#\?}
        [ -f "$modules/$name" ] || die "$modules/$name is missing"
        cp "$modules/$name" "lib/modules/$name"
        echo "$line" >>etc/cvm/modules
done <"$modules/modules.order"

if [ -n "$handler" ]; then
        install_exe "$handler" "fn/$(basename "$handler")"
fi
printf '%s' "$files" | while IFS= read -r spec; do
        [ -n "$spec" ] || continue
        src=${spec%%:*}
        case $src in /*) ;; *) src="$cwd/$src" ;; esac
        dst=${spec#*:}
        case $dst in /*) ;; *) die "--file $spec: DST must be absolute" ;; esac
        [ -f "$src" ] || die "--file: $src is not a file"
        mkdir -p ".${dst%/*}"
        cp -p "$src" ".$dst"
done

{
        echo "--concurrency"
        echo "$concurrency"
        printf '%s' "$agent_args"
        echo "--"
        for a in "$@"; do echo "$a"; done
} >etc/cvm/agent.args
[ -z "$port_name" ] || echo "$port_name" >etc/cvm/port-name

# With a console node the kernel gives /init stdin, stdout and stderr from
# the start; making one needs root, and cvm-init copes without it.
mknod -m 600 dev/console c 5 1 2>/dev/null || true

epoch=${SOURCE_DATE_EPOCH:-0}
find . -exec touch -h -d "@$epoch" {} +
mkdir -p "$(dirname "$out")"
if cpio --help 2>/dev/null | grep -q -- --reproducible; then
        find . -mindepth 1 | LC_ALL=C sort |
                cpio -o -H newc -R 0:0 --reproducible --quiet | $compress >"$out.tmp"
else
        # busybox cpio: same format, inode numbers as they come.
        find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0 2>/dev/null |
                $compress >"$out.tmp"
fi
mv "$out.tmp" "$out"
