#!/usr/bin/env python3
"""Records what QEMU 7.2 sends a vhost-user-blk back-end and turns it into
seeds for tests/fuzz/fuzz_vmm_session.cpp (tests/fuzz/README.md).

    vmm_corpus.py record --peers ../shared/peers --backend build/bin/vufront-backend \\
        --out tests/fuzz/corpus/vmm_session [--logs DIR] [--only NAME ...]
    vmm_corpus.py convert LOG OUT [--packed] [--queues N]

record boots a Linux guest (tests/integration/guest.py: QEMU TCG, Debian's
cloud kernel, a busybox initramfs) once per scenario, with a tap between
QEMU and the back-end that forwards every message both ways (fds included)
and logs it. The tap answers QEMU's GET_FEATURES and GET_PROTOCOL_FEATURES
with the back-end's offer masked as proxy::vmm_offer masks it (no LOG_ALL,
ACCESS_PLATFORM; only MQ, REPLY_ACK, BACKEND_REQ, CONFIG, INFLIGHT_SHMFD,
RESET_DEVICE, CONFIGURE_MEM_SLOTS, STATUS), so QEMU sends what it sends
vufront's VMM socket. Scenarios:

  split-poweroff  qemu-storage-daemon, 1 queue: realize, boot, I/O, poweroff
  packed          vufront-backend, -device ...,packed=on
  two-queues      qemu-storage-daemon num-queues=2, -smp 2, I/O from each vCPU
  reboot          qemu-storage-daemon: boot, write, reboot -f, boot, poweroff

The log (LOG, one per scenario, kept with --logs) is a sequence of
[direction '>' or '<'][fd count][12-byte header][body]; convert keeps the
front-end's messages ('>') as fuzz input: [selector] then [fds][header][body]
each (selector: bit 0 RING_PACKED offered, bits 1-2 queues - 1, bit 4 the
back-end channel held, as fuzz_vmm_session.cpp reads it).
"""
import argparse
import array
import os
import select
import shutil
import socket
import struct
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

GET_FEATURES, GET_PROTOCOL_FEATURES = 1, 15
WITHHELD_FEATURES = (1 << 26) | (1 << 33)                     # LOG_ALL, ACCESS_PLATFORM
PROXIED_PROTOCOL = sum(1 << b for b in (0, 3, 5, 9, 12, 13, 15, 16))
MAX_SEED = 16 << 10


# ---- the log and its conversion ---------------------------------------------------

def read_log(path):
    """[(direction, nfds, header, body)] of a tap log."""
    data = open(path, 'rb').read()
    out, pos = [], 0
    while pos + 14 <= len(data):
        d, nfds = data[pos:pos + 1], data[pos + 1]
        header = data[pos + 2:pos + 14]
        size = struct.unpack('<III', header)[2]
        body = data[pos + 14:pos + 14 + size]
        out.append((d, nfds, header, body))
        pos += 14 + size
    return out


def selector(packed, queues):
    return (1 if packed else 0) | ((queues - 1) & 3) << 1 | 0x10


def convert(log, out, packed=False, queues=1):
    seed = bytearray([selector(packed, queues)])
    for d, nfds, header, body in read_log(log):
        if d == b'>':
            seed += bytes([nfds]) + header + body
    if len(seed) > MAX_SEED:
        raise SystemExit('%s: %d bytes, more than a seed should be' % (out, len(seed)))
    with open(out, 'wb') as f:
        f.write(seed)
    return len(seed)


# ---- the tap ----------------------------------------------------------------------

def recv_msg(s):
    fds = array.array('i')
    hdr, anc, _, _ = s.recvmsg(12, socket.CMSG_LEN(64 * 4))
    if len(hdr) < 12:
        return None
    for lvl, typ, data in anc:
        if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % 4])
    size = struct.unpack('<III', hdr)[2]
    body = b''
    while len(body) < size:
        chunk = s.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return hdr, body, list(fds)


def masked(hdr, body):
    """A back-end reply as vufront would have offered it to the VMM."""
    req = struct.unpack('<III', hdr)[0]
    if len(body) == 8 and req in (GET_FEATURES, GET_PROTOCOL_FEATURES):
        v = struct.unpack('<Q', body)[0]
        v = v & ~WITHHELD_FEATURES if req == GET_FEATURES else v & PROXIED_PROTOCOL
        return struct.pack('<Q', v)
    return body


class Tap:
    """Listens on `listen`; for one front-end connection at a time connects to
    `backend` and forwards both ways, appending every message to `log`."""

    def __init__(self, listen, backend, log):
        self.backend, self.log = backend, open(log, 'wb')
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(listen)
        self.srv.listen(1)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            if not select.select([self.srv], [], [], 0.2)[0]:
                continue
            conn, _ = self.srv.accept()
            try:
                self._serve(conn)
            except OSError:
                pass

    def _serve(self, conn):
        be = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        be.connect(self.backend)
        ends = {conn: (be, b'>'), be: (conn, b'<')}
        try:
            while not self.stopping:
                for s in select.select(list(ends), [], [], 0.2)[0]:
                    m = recv_msg(s)
                    if m is None:
                        return
                    hdr, body, fds = m
                    other, d = ends[s]
                    if d == b'<':
                        body = masked(hdr, body)
                    self.log.write(d + bytes([len(fds)]) + hdr + body)
                    self.log.flush()
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))] if fds else []
                    other.sendmsg([hdr + body], anc)
                    for fd in fds:
                        os.close(fd)
        finally:
            conn.close()
            be.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.srv.close()
        self.log.close()


# ---- the scenarios ----------------------------------------------------------------

def guest_body(guest, reboot=False, cpus=1):
    io = ''.join('taskset %d dd if=/dev/urandom of=/dev/vda bs=4096 seek=%d count=16 conv=fsync 2>/dev/null\n'
                 'taskset %d dd if=/dev/vda of=/dev/null bs=4096 skip=%d count=16 2>/dev/null\n'
                 % (1 << c, 64 * c, 1 << c, 64 * c) for c in range(cpus))
    body = guest.wait_for_block('/dev/vda') + io + 'sync\necho VUFRONT-GUEST-DONE\n'
    if not reboot:
        return body + 'poweroff -f\n'
    return body + '''mark=$(dd if=/dev/vda bs=512 skip=4096 count=1 2>/dev/null | head -c 12)
if [ "$mark" = "VUFRONT-BOOT" ]; then poweroff -f; fi
printf VUFRONT-BOOT | dd of=/dev/vda bs=512 seek=4096 conv=sync,fsync 2>/dev/null
reboot -f
'''


SCENARIOS = {
    # name: (back-end, device options, vCPUs, reboot, packed, queues)
    'split-poweroff': ('qsd', '', 1, False, False, 1),
    'packed': ('ref', ',packed=on', 1, False, True, 1),
    'two-queues': ('qsd', ',num-queues=2', 2, False, False, 2),
    'reboot': ('qsd', '', 1, True, False, 1),
}


def record_one(args, name, tmp, prereq):
    import guest
    from vubackend import Backend, Peer
    kind, opts, cpus, reboot, packed, queues = SCENARIOS[name]
    qemu, kernel, version, busybox = prereq
    img = os.path.join(tmp, name + '.img')
    with open(img, 'wb') as f:
        f.truncate(16 << 20)
    sock = os.path.join(tmp, name + '-be.sock')
    if kind == 'qsd':
        backend = Peer(args.peers, 'start-qsd-blk.sh', sock, img, env={'QSD_NUM_QUEUES': str(queues)})
    else:
        backend = Backend(args.backend, sock, '--image', img, '--packed')
    log = os.path.join(args.logs or tmp, name + '.vulog')
    rd = os.path.join(tmp, name + '.cpio')
    guest.build_initramfs(rd, version, busybox, ['virtio_pci', 'virtio_blk'],
                          guest_body(guest, reboot, cpus))
    with backend:
        tap = Tap(os.path.join(tmp, name + '-vmm.sock'), sock, log)
        try:
            with guest.Qemu(qemu, kernel, rd,
                            ['-chardev', 'socket,id=c0,path=%s' % os.path.join(tmp, name + '-vmm.sock'),
                             '-device', 'vhost-user-blk-pci,chardev=c0' + opts],
                            smp=cpus, reboot=reboot) as q:
                code = q.wait_exit(120)
                if code != 0 or 'VUFRONT-GUEST-DONE' not in q.console_text():
                    raise SystemExit('%s: the guest did not finish (exit %s):\n%s\n%s' % (
                        name, code, q.console_text()[-3000:], q.stderr_text()[-2000:]))
        finally:
            tap.stop()
    out = os.path.join(args.out, 'seed-qemu-' + name)
    print('%s: %d bytes' % (out, convert(log, out, packed, queues)))


def record(args):
    import guest
    prereq, why = guest.find_prerequisites(args.qemu)
    if not prereq:
        raise SystemExit(why)
    os.makedirs(args.out, exist_ok=True)
    if args.logs:
        os.makedirs(args.logs, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='vmm-corpus-')
    try:
        for name in args.only or SCENARIOS:
            record_one(args, name, tmp, prereq)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('record')
    r.add_argument('--peers', required=True)
    r.add_argument('--backend', required=True, help='build/bin/vufront-backend (packed)')
    r.add_argument('--qemu', default='qemu-system-x86_64')
    r.add_argument('--out', required=True)
    r.add_argument('--logs', help='keep the tap logs here')
    r.add_argument('--only', nargs='*', choices=sorted(SCENARIOS))
    c = sub.add_parser('convert')
    c.add_argument('log')
    c.add_argument('out')
    c.add_argument('--packed', action='store_true')
    c.add_argument('--queues', type=int, default=1)
    args = p.parse_args()
    if args.cmd == 'record':
        record(args)
    else:
        print('%s: %d bytes' % (args.out, convert(args.log, args.out, args.packed, args.queues)))


if __name__ == '__main__':
    main()
