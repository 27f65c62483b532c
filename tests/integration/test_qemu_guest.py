#!/usr/bin/env python3
"""vufront-backend serving QEMU itself: a real guest boots with its disk on
the reference back-end (vhost-user-blk-pci), reads what the host wrote, writes
its own data, writes 64 KiB and reads them back from the disk, and powers off.
It boots twice: once with split virtqueues, once with packed ones
(vhost-user-blk-pci,packed=on).

QEMU 7.2 (Debian's qemu-system-x86, TCG) boots Debian's cloud kernel
(linux-image-cloud-amd64) with an initramfs built here from busybox-static
and the kernel's own virtio modules. The firmware (SeaBIOS) drives the disk
first; the guest kernel then resets the device, which QEMU does with
SET_STATUS 0, SET_VRING_ENABLE 0 and GET_VRING_BASE (STATUS is negotiated):
the reset that lost the guest its disk when the back-end took SET_STATUS 0
as forgetting the negotiated features. The test checks that the guest read
the host's data after that reset, that its writes reached the disk image
(a marker, and 64 KiB written through the page cache with conv=fsync, which
the guest reads back with O_DIRECT and compares), that the kernel acked
RING_PACKED exactly when packed=on, that the back-end saw the stop and
dropped nobody, and that QEMU reported no failure. Linux's packed ring puts
every request of more than one buffer into an indirect table of packed
descriptors (virtio 1.2 2.8.19): the layout that lost the guest's writes when
the back-end read those tables as split descriptors.

Without qemu-system-x86_64, a cloud kernel or a static busybox the test exits
77 (ctest: skipped) naming what is missing; ./run.sh test installs them.

    test_qemu_guest.py --backend build/bin/vufront-backend [--qemu qemu-system-x86_64]
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import guest
from vubackend import Backend

SKIP = guest.SKIP
HOST_MARKER = b'VUFRONT-HOST-MARKER-5e1f0c37'
GUEST_MARKER = b'VUFRONT-GUEST-WROTE-9b2d41a6'
HOST_SECTOR, GUEST_SECTOR = 100, 200
BULK_SECTOR, BULK_BYTES = 2048, 64 << 10  # the guest writes and reads back 64 KiB here
RING_PACKED = 34  # virtio feature bit VIRTIO_F_RING_PACKED
QEMU_LIMIT = 60  # seconds QEMU may run before the test kills it (a hang fails; ~5 s when it works)
# virtio over PCI, then the disk; each loaded after what it depends on
WANTED_MODULES = ['virtio_pci', 'virtio_blk']


# ---- the guest's /init ---------------------------------------------------------

def bulk_payload():
    """The 64 KiB the guest writes: every 32 bytes different, so a lost,
    misplaced or partial sector shows."""
    return b''.join(hashlib.sha256(b'vufront-bulk-%d' % i).digest()
                    for i in range(BULK_BYTES // 32))


def init_body():
    """After guest.init_preamble(): read the host's marker from the disk,
    write the guest's, write /bulk.bin (bulk_payload()) at BULK_SECTOR and
    read it back past the page cache (O_DIRECT), power off."""
    return guest.wait_for_block('/dev/vda') + ('''got=$(dd if=/dev/vda bs=512 skip=%(host)d count=1 2>/dev/null | head -c %(hlen)d)
echo "VUFRONT-GUEST-READ $got"
printf '%%s' '%(guest)s' | dd of=/dev/vda bs=512 seek=%(gsec)d conv=sync,fsync 2>/dev/null \\
  || echo "VUFRONT-GUEST-FAIL write"
dd if=/bulk.bin of=/dev/vda bs=512 seek=%(bsec)d conv=fsync 2>/dev/null \\
  || echo "VUFRONT-GUEST-FAIL bulk write"
dd if=/dev/vda of=/bulk.back bs=%(blen)d skip=%(bblk)d count=1 iflag=direct 2>/dev/null \\
  || echo "VUFRONT-GUEST-FAIL bulk read"
if cmp -s /bulk.bin /bulk.back; then echo VUFRONT-GUEST-BULK-SAME
else echo "VUFRONT-GUEST-FAIL bulk read back differs: $(cmp /bulk.bin /bulk.back 2>&1)"; fi
sync
echo VUFRONT-GUEST-DONE
poweroff -f
''' % {'host': HOST_SECTOR, 'hlen': len(HOST_MARKER),
       'guest': GUEST_MARKER.decode(), 'gsec': GUEST_SECTOR, 'bsec': BULK_SECTOR,
       'blen': BULK_BYTES, 'bblk': BULK_SECTOR * 512 // BULK_BYTES})


# ---- the test -------------------------------------------------------------------

def run_guest(args, prereq, tmp, packed):
    qemu, kernel, version, busybox = prereq
    initrd = os.path.join(tmp, 'initrd.cpio')
    modules = guest.build_initramfs(initrd, version, busybox, WANTED_MODULES, init_body(),
                                    files=[('bulk.bin', bulk_payload())])
    image = os.path.join(tmp, 'disk.img')
    with open(image, 'wb') as f:
        f.truncate(16 << 20)
        f.seek(HOST_SECTOR * 512)
        f.write(HOST_MARKER)
    sock = os.path.join(tmp, 'blk.sock')
    backend = Backend(args.backend, sock, '--image', image)
    qemu_proc = None
    try:
        qemu_proc = subprocess.Popen(
            [qemu, '-accel', 'tcg', '-m', '256', '-smp', '1', '-nographic', '-no-reboot',
             '-nodefaults', '-serial', 'stdio', '-kernel', kernel, '-initrd', initrd,
             '-append', 'console=ttyS0 panic=-1 quiet',
             '-object', 'memory-backend-memfd,id=mem,size=256M,share=on',
             '-numa', 'node,memdev=mem',
             '-chardev', 'socket,id=c0,path=' + sock,
             '-device', 'vhost-user-blk-pci,chardev=c0' + (',packed=on' if packed else '')],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        hung = False
        try:
            out, err = qemu_proc.communicate(timeout=QEMU_LIMIT)
        except subprocess.TimeoutExpired:  # killed by pid; the report says so
            hung = True
            qemu_proc.kill()
            out, err = qemu_proc.communicate()
        console = out.decode(errors='replace')
        qemu_err = err.decode(errors='replace')
    finally:
        if qemu_proc is not None and qemu_proc.poll() is None:
            qemu_proc.kill()
            qemu_proc.wait(10)
        backend.stop()
    code = 'killed: still running after %d s' % QEMU_LIMIT if hung else qemu_proc.returncode
    return modules, image, console, qemu_err, backend.log_text(), code


def acked_features(backend_log):
    """The features of the back-end log's last SET_FEATURES (the kernel's)."""
    acked = re.findall(r'<- SET_FEATURES \(8 bytes\) (0x[0-9a-f]+)', backend_log)
    assert acked, 'no SET_FEATURES in the back-end log'
    return int(acked[-1], 16)


def check(args, prereq, packed):
    tmp = tempfile.mkdtemp(prefix='vufront-qemu-')
    try:
        modules, image, console, qemu_err, backend_log, code = run_guest(args, prereq, tmp, packed)
        report = ('%s rings; QEMU exit: %s; modules loaded: %s\n--- console:\n%s\n'
                  '--- QEMU stderr:\n%s\n--- back-end log:\n%s'
                  % ('packed' if packed else 'split', code, modules, console[-4000:],
                     qemu_err[-2000:], backend_log[-6000:]))
        assert 'VUFRONT-GUEST-BOOTED' in console, report
        assert 'VUFRONT-GUEST-FAIL' not in console, report
        # the guest read the host's marker through the kernel's driver, i.e.
        # after the firmware's use of the disk and the reset that followed
        assert 'VUFRONT-GUEST-READ ' + HOST_MARKER.decode() in console, report
        assert 'VUFRONT-GUEST-BULK-SAME' in console, report
        assert 'VUFRONT-GUEST-DONE' in console, report
        # the kernel's driver ran the rings the test asked for
        assert bool(acked_features(backend_log) >> RING_PACKED & 1) == packed, report
        assert code == 0, 'QEMU exited %s\n%s' % (code, report)
        assert 'ring restore failed' not in qemu_err, report
        assert not [l for l in qemu_err.splitlines()
                    if 'vhost' in l and ('fail' in l.lower() or 'error' in l.lower())], report
        # QEMU stopped the device with SET_STATUS 0 and went on; nobody was dropped
        assert '<- SET_STATUS (8 bytes) 0x0' in backend_log, report
        stop = backend_log.index('<- SET_STATUS (8 bytes) 0x0')
        assert '<- SET_VRING_ENABLE' in backend_log[stop:], report
        assert '<- GET_VRING_BASE' in backend_log[stop:], report
        assert 'dropping front-end' not in backend_log, report
        with open(image, 'rb') as f:
            f.seek(GUEST_SECTOR * 512)
            assert f.read(len(GUEST_MARKER)) == GUEST_MARKER, report
            f.seek(BULK_SECTOR * 512)
            assert f.read(BULK_BYTES) == bulk_payload(), report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--qemu', default='qemu-system-x86_64')
    args = ap.parse_args()
    prereq, why = guest.find_prerequisites(args.qemu)
    if prereq is None:
        print('SKIPPED: ' + why)
        return SKIP
    passed, failed = 0, 0
    for name, packed in (('test_qemu_guest_boots_on_the_reference_backend', False),
                         ('test_qemu_guest_packed_rings_on_the_reference_backend', True)):
        try:
            check(args, prereq, packed)
        except Exception:  # noqa: BLE001 - the report is the traceback
            import traceback
            traceback.print_exc()
            print('FAIL ' + name)
            failed += 1
            continue
        print('PASS ' + name)
        passed += 1
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0

if __name__ == '__main__':
    sys.exit(main())
