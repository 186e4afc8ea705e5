#!/usr/bin/env python3
"""An independent SEV-SNP launch digest calculator, used to derive the known answers pinned in
tests/unit/test_snp_measure.c. Standard library only (hashlib, struct, uuid).

It follows AMD's SNP firmware ABI (PAGE_INFO, SNP_LAUNCH_UPDATE) and the way QEMU launches an
SNP guest (target/i386/sev.c), as docs/measurement.md describes. It was written from those
documents, not from lib/snp_*.c, so that the two can catch each other's mistakes.

    snp_measure_ref.py --firmware OVMF.fd [--vcpus N] [--vcpu-type T] [--kernel F] ...
    snp_measure_ref.py --synthetic ...       # the test's synthetic firmware image
    snp_measure_ref.py --known-answers [--ovmf PATH]   # every case the C test pins
"""

import argparse
import hashlib
import struct
import sys
import uuid

PAGE = 4096
FOUR_GIB = 1 << 32
VMSA_GPA = 0xFFFFFFFFF000  # (u64)-1, page aligned, bits above 51 cleared.
BSP_RESET_EIP = 0xFFFFFFF0

PAGE_NORMAL, PAGE_VMSA, PAGE_ZERO, PAGE_UNMEASURED, PAGE_SECRETS, PAGE_CPUID = 1, 2, 3, 4, 5, 6

GUID_FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
GUID_RESET_BLOCK = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
GUID_METADATA = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc")
GUID_HASH_TABLE_RV = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
GUID_HT_HEADER = uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
GUID_HT_KERNEL = uuid.UUID("4de79437-abd2-427f-b835-d5b172d2045b")
GUID_HT_INITRD = uuid.UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
GUID_HT_CMDLINE = uuid.UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")

SEC_MEM, SEC_SECRETS, SEC_CPUID, SEC_SVSM_CAA, SEC_KERNEL_HASHES = 1, 2, 3, 4, 0x10


def family_model_stepping(family, model, stepping):
    """CPUID Fn0000_0001_EAX for an AMD family/model/stepping."""
    ext_family = family - 0xF if family > 0xF else 0
    base_family = min(family, 0xF)
    return (ext_family << 20) | ((model >> 4) << 16) | (base_family << 8) | ((model & 0xF) << 4) | stepping


CPU_MODELS = {
    "EPYC": (23, 1, 2), "EPYC-v1": (23, 1, 2), "EPYC-v2": (23, 1, 2), "EPYC-v3": (23, 1, 2),
    "EPYC-v4": (23, 1, 2), "EPYC-IBPB": (23, 1, 2),
    "EPYC-Rome": (23, 49, 0), "EPYC-Rome-v1": (23, 49, 0), "EPYC-Rome-v2": (23, 49, 0),
    "EPYC-Rome-v3": (23, 49, 0), "EPYC-Rome-v4": (23, 49, 0),
    "EPYC-Milan": (25, 1, 1), "EPYC-Milan-v1": (25, 1, 1), "EPYC-Milan-v2": (25, 1, 1),
    "EPYC-Genoa": (25, 17, 0), "EPYC-Genoa-v1": (25, 17, 0),
    "EPYC-Turin": (26, 0, 0), "EPYC-Turin-v1": (26, 0, 0),
}


class LaunchDigest:
    """DIGEST_CUR of SNP_LAUNCH_UPDATE: SHA-384 over each page's PAGE_INFO in turn."""

    def __init__(self):
        self.value = bytes(48)
        self.counts = {}

    def page(self, gpa, page_type, data=None):
        contents = hashlib.sha384(data).digest() if data is not None else bytes(48)
        # PAGE_INFO: DIGEST_CUR, CONTENTS, LENGTH, PAGE_TYPE, IMI_PAGE, VMPL3/2/1 perms, reserved, GPA.
        info = self.value + contents + struct.pack("<HBBBBBBQ", 0x70, page_type, 0, 0, 0, 0, 0, gpa)
        assert len(info) == 0x70
        self.value = hashlib.sha384(info).digest()
        self.counts[page_type] = self.counts.get(page_type, 0) + 1

    def region(self, gpa, page_type, length, data=None):
        for off in range(0, length, PAGE):
            self.page(gpa + off, page_type, None if data is None else data[off:off + PAGE])


def guid_table(image):
    """The OVMF footer GUID table as {uuid: data}; empty when the image has none."""
    n = len(image)
    if n < 50 or uuid.UUID(bytes_le=bytes(image[n - 48:n - 32])) != GUID_FOOTER:
        return {}
    (total,) = struct.unpack_from("<H", image, n - 50)
    if total < 18 or total - 18 > n - 50:
        raise ValueError("bad GUID table length %d" % total)
    table = bytes(image[n - 50 - (total - 18):n - 50])
    entries = {}
    while table:
        if len(table) < 18:
            raise ValueError("truncated GUID table entry")
        guid = uuid.UUID(bytes_le=table[-16:])
        (size,) = struct.unpack("<H", table[-18:-16])
        if size < 18 or size > len(table):
            raise ValueError("bad GUID table entry size %d" % size)
        if guid in entries:
            raise ValueError("duplicate GUID table entry %s" % guid)
        entries[guid] = table[len(table) - size:-18]
        table = table[:len(table) - size]
    return entries


def sev_sections(image, table):
    if GUID_METADATA not in table:
        return []
    (offset,) = struct.unpack_from("<I", table[GUID_METADATA], 0)
    base = len(image) - offset
    magic, length, _version, count = struct.unpack_from("<4sIII", image, base)
    if magic != b"ASEV" or 16 + 12 * count > length or length > offset:
        raise ValueError("bad SEV metadata")
    return [struct.unpack_from("<III", image, base + 16 + 12 * i) for i in range(count)]


def hashes_table(kernel, initrd, cmdline):
    """QEMU's PaddedSevHashTable: header, then cmdline, initrd, kernel entries, 16-byte aligned."""
    def entry(guid, blob):
        return guid.bytes_le + struct.pack("<H", 16 + 2 + 32) + hashlib.sha256(blob).digest()

    body = (entry(GUID_HT_CMDLINE, (cmdline or "").encode() + b"\0")
            + entry(GUID_HT_INITRD, initrd or b"")
            + entry(GUID_HT_KERNEL, kernel))
    table = GUID_HT_HEADER.bytes_le + struct.pack("<H", 18 + len(body)) + body
    return table + bytes(-len(table) % 16)


def segment(selector, attrib, limit, base):
    return struct.pack("<HHIQ", selector, attrib, limit, base)


def vmsa_page(eip, signature, features):
    """The SEV-ES save area KVM builds for a QEMU vCPU at reset (AMD APM vol. 2 table B-4)."""
    page = bytearray(PAGE)
    segs = [segment(0, 0x93, 0xFFFF, 0),                       # es
            segment(0xF000, 0x9B, 0xFFFF, eip & 0xFFFF0000),     # cs
            segment(0, 0x93, 0xFFFF, 0),                       # ss
            segment(0, 0x93, 0xFFFF, 0),                       # ds
            segment(0, 0x93, 0xFFFF, 0),                       # fs
            segment(0, 0x93, 0xFFFF, 0),                       # gs
            segment(0, 0, 0xFFFF, 0),                          # gdtr
            segment(0, 0x82, 0xFFFF, 0),                       # ldtr
            segment(0, 0, 0xFFFF, 0),                          # idtr
            segment(0, 0x8B, 0xFFFF, 0)]                       # tr
    page[0:0xA0] = b"".join(segs)
    fields = [  # (offset, struct format, value)
        (0x0D0, "Q", 0x1000),             # efer: SVME
        (0x148, "Q", 0x40),               # cr4: MCE
        (0x158, "Q", 0x10),               # cr0: ET
        (0x160, "Q", 0x400),              # dr7
        (0x168, "Q", 0xFFFF0FF0),         # dr6
        (0x170, "Q", 0x2),                # rflags
        (0x178, "Q", eip & 0xFFFF),       # rip
        (0x268, "Q", 0x0007040600070406), # g_pat
        (0x310, "Q", signature),          # rdx
        (0x3B0, "Q", features),           # sev_features
        (0x3E8, "Q", 0x1),                # xcr0
        (0x408, "I", 0x1F80),             # mxcsr
        (0x410, "H", 0x37F),              # x87_fcw
    ]
    for off, fmt, value in fields:
        struct.pack_into("<" + fmt, page, off, value)
    return bytes(page)


def measure(image, vcpus=1, vcpu_type="EPYC-v4", kernel=None, initrd=None, cmdline=None,
            features=0x1):
    if len(image) == 0 or len(image) % PAGE:
        raise ValueError("firmware size must be a non-zero multiple of 4 KiB")
    table = guid_table(image)
    ld = LaunchDigest()
    ld.region(FOUR_GIB - len(image), PAGE_NORMAL, len(image), image)
    saw_hashes = False
    for gpa, size, kind in sev_sections(image, table):
        if kind in (SEC_MEM, SEC_SVSM_CAA):
            ld.region(gpa, PAGE_ZERO, size)
        elif kind == SEC_SECRETS:
            ld.region(gpa, PAGE_SECRETS, size)
        elif kind == SEC_CPUID:
            ld.region(gpa, PAGE_CPUID, size)
        elif kind == SEC_KERNEL_HASHES:
            saw_hashes = True
            if kernel is None:
                ld.region(gpa, PAGE_ZERO, size)
                continue
            (ht_base,) = struct.unpack_from("<I", table[GUID_HASH_TABLE_RV], 0)
            offset = ht_base % PAGE
            ht = hashes_table(kernel, initrd, cmdline)
            area = bytes(offset) + ht + bytes(size - offset - len(ht))
            ld.region(gpa, PAGE_NORMAL, size, area)
        else:
            raise ValueError("unknown section type %#x" % kind)
    if kernel is not None and not saw_hashes:
        raise ValueError("kernel given but the firmware has no SNP_KERNEL_HASHES section")
    signature = family_model_stepping(*CPU_MODELS[vcpu_type])
    for cpu in range(vcpus):
        if cpu == 0:
            eip = BSP_RESET_EIP
        else:
            (eip,) = struct.unpack_from("<I", table[GUID_RESET_BLOCK], 0)
        ld.page(VMSA_GPA, PAGE_VMSA, vmsa_page(eip, signature, features))
    return ld


# ── The synthetic firmware image and boot artifacts the C test builds identically ──────────────

SYN_SIZE = 0x10000
SYN_RESET_EIP = 0x00811004
SYN_HASH_TABLE = (0x00810C00, 0x400)
SYN_METADATA_OFFSET = 0x2000
SYN_SECTIONS = [
    (0x00800000, 0x9000, SEC_MEM),
    (0x00809000, 0x1000, SEC_SECRETS),
    (0x0080A000, 0x1000, SEC_CPUID),
    (0x0080B000, 0x1000, SEC_SVSM_CAA),
    (0x00810000, 0x1000, SEC_KERNEL_HASHES),
    (0x00811000, 0x3000, SEC_MEM),
]


def pattern(length, seed):
    return bytes((i * 131 + (i >> 12) + seed) & 0xFF for i in range(length))


def synthetic_firmware():
    image = bytearray(pattern(SYN_SIZE, 0))
    meta = struct.pack("<4sIII", b"ASEV", 16 + 12 * len(SYN_SECTIONS), 1, len(SYN_SECTIONS))
    meta += b"".join(struct.pack("<III", *s) for s in SYN_SECTIONS)
    base = SYN_SIZE - SYN_METADATA_OFFSET
    image[base:base + len(meta)] = meta

    def entry(guid, data):
        return data + struct.pack("<H", len(data) + 18) + guid.bytes_le

    table = (entry(GUID_METADATA, struct.pack("<I", SYN_METADATA_OFFSET))
             + entry(GUID_HASH_TABLE_RV, struct.pack("<II", *SYN_HASH_TABLE))
             + entry(GUID_RESET_BLOCK, struct.pack("<I", SYN_RESET_EIP)))
    tail = table + struct.pack("<H", len(table) + 18) + GUID_FOOTER.bytes_le
    image[SYN_SIZE - 32 - len(tail):SYN_SIZE - 32] = tail
    return bytes(image)


SYN_KERNEL = pattern(10000, 1)
SYN_INITRD = pattern(3000, 2)
SYN_CMDLINE = "console=ttyS0 root=/dev/vda"


def known_answers(ovmf_path):
    syn = synthetic_firmware()
    plain = pattern(4 * PAGE, 3)
    cases = [
        ("synthetic, 1 vCPU EPYC-v4", syn, dict(vcpus=1)),
        ("synthetic, 4 vCPUs EPYC-v4", syn, dict(vcpus=4)),
        ("synthetic, 1 vCPU EPYC-Milan, kernel+initrd+cmdline", syn,
         dict(vcpus=1, vcpu_type="EPYC-Milan", kernel=SYN_KERNEL, initrd=SYN_INITRD,
              cmdline=SYN_CMDLINE)),
        ("synthetic, 4 vCPUs EPYC-Genoa, kernel only", syn,
         dict(vcpus=4, vcpu_type="EPYC-Genoa", kernel=SYN_KERNEL)),
        ("synthetic, 2 vCPUs EPYC, guest features 0x21", syn,
         dict(vcpus=2, vcpu_type="EPYC", features=0x21)),
        ("plain 4-page firmware, 1 vCPU EPYC", plain, dict(vcpus=1, vcpu_type="EPYC")),
    ]
    try:
        with open(ovmf_path, "rb") as f:
            ovmf = f.read()
        cases += [("OVMF.fd, 1 vCPU EPYC-v4", ovmf, dict(vcpus=1)),
                  ("OVMF.fd, 4 vCPUs EPYC-Milan", ovmf, dict(vcpus=4, vcpu_type="EPYC-Milan"))]
    except FileNotFoundError:
        print("(%s missing: its cases are skipped)" % ovmf_path, file=sys.stderr)
    for name, image, kwargs in cases:
        ld = measure(image, **kwargs)
        counts = ", ".join("%d:%d" % kv for kv in sorted(ld.counts.items()))
        print("%-56s %s  [type:pages %s]" % (name, ld.value.hex(), counts))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--firmware")
    src.add_argument("--synthetic", action="store_true")
    src.add_argument("--known-answers", action="store_true")
    p.add_argument("--ovmf", default="/usr/share/ovmf/OVMF.fd")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--vcpu-type", default="EPYC-v4", choices=sorted(CPU_MODELS))
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--append")
    p.add_argument("--guest-features", type=lambda s: int(s, 0), default=0x1)
    args = p.parse_args()
    if args.known_answers:
        known_answers(args.ovmf)
        return
    if args.firmware:
        with open(args.firmware, "rb") as f:
            image = f.read()
    else:
        image = synthetic_firmware()

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    ld = measure(image, args.vcpus, args.vcpu_type, read(args.kernel), read(args.initrd),
                 args.append, args.guest_features)
    print(ld.value.hex())


if __name__ == "__main__":
    main()
