"""A real Linux guest under QEMU for the integration tests (test_qemu_guest.py,
test_vmm_proxy.py): what it needs, its initramfs, and QEMU as a process.

QEMU 7.2 (Debian's qemu-system-x86, TCG: this machine's /dev/kvm cannot start
a stock kernel) boots Debian's cloud kernel (linux-image-cloud-amd64) with an
initramfs built here from busybox-static and the kernel's own modules, loaded
in dependency order. Guest RAM is a shared memfd (vhost-user needs it). The
guest's /init reports every outcome as one serial-console line starting with
VUFRONT-GUEST.

QEMU is always stopped by pid: SIGTERM, then SIGKILL after a grace period (a
QEMU blocked on a vhost-user reply ignores SIGTERM).
"""
import glob
import gzip
import json
import lzma
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

SKIP = 77


# ---- what a guest needs ---------------------------------------------------------

def is_static(path):
    """Whether the ELF file at `path` has no program interpreter (PT_INTERP)."""
    with open(path, 'rb') as f:
        head = f.read(64)
        if head[:4] != b'\x7fELF' or head[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from('<Q', head, 0x20)
        phentsize, phnum = struct.unpack_from('<HH', head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from('<I', table, i * phentsize)[0] != 3 for i in range(phnum))


def find_prerequisites(qemu):
    """(qemu, kernel, version, busybox) or the reason a guest cannot run."""
    qemu_path = shutil.which(qemu)
    if not qemu_path:
        return None, '%s not found (Debian package qemu-system-x86)' % qemu
    kernels = sorted(glob.glob('/boot/vmlinuz-*-cloud-amd64'))
    if not kernels:
        return None, 'no /boot/vmlinuz-*-cloud-amd64 (Debian package linux-image-cloud-amd64)'
    kernel = kernels[-1]
    version = os.path.basename(kernel)[len('vmlinuz-'):]
    if not os.path.isdir('/lib/modules/' + version):
        return None, 'no /lib/modules/%s for %s' % (version, kernel)
    busybox = '/bin/busybox'
    if not os.path.exists(busybox) or not is_static(busybox):
        return None, 'no static /bin/busybox (Debian package busybox-static)'
    return (qemu_path, kernel, version, busybox), None


# ---- the guest's initramfs ------------------------------------------------------

def module_load_order(version, wanted):
    """[(name, path)] of the modules to insmod, dependencies first; modules
    built into the kernel are left out."""
    base = '/lib/modules/' + version
    deps = {}
    with open(os.path.join(base, 'modules.dep')) as f:
        for line in f:
            path, _, rest = line.partition(':')
            deps[path] = rest.split()
    builtin = set()
    if os.path.exists(os.path.join(base, 'modules.builtin')):
        with open(os.path.join(base, 'modules.builtin')) as f:
            builtin = {re.sub(r'\.ko.*$', '', os.path.basename(l.strip())) for l in f}
    by_name = {re.sub(r'\.ko.*$', '', os.path.basename(p)).replace('-', '_'): p for p in deps}
    order = []

    def visit(path):
        for d in deps[path]:
            visit(d)
        if path not in order:
            order.append(path)

    for name in wanted:
        if name in builtin:
            continue
        if name not in by_name:
            raise AssertionError('module %s is neither built into %s nor in its modules.dep'
                                 % (name, version))
        visit(by_name[name])
    return [(re.sub(r'\.ko.*$', '', os.path.basename(p)), os.path.join(base, p)) for p in order]


def module_bytes(path):
    """The module file's ELF bytes (.ko, .ko.xz, .ko.gz)."""
    with open(path, 'rb') as f:
        data = f.read()
    if path.endswith('.xz'):
        return lzma.decompress(data)
    if path.endswith('.gz'):
        return gzip.decompress(data)
    if path.endswith('.ko'):
        return data
    raise AssertionError('cannot unpack module %s' % path)


def init_preamble(modules):
    """The start of every /init: busybox, /proc, /sys, /dev, the modules."""
    loads = '\n'.join('insmod /lib/modules/%s.ko || echo "VUFRONT-GUEST-FAIL insmod %s"' % (m, m)
                      for m in modules)
    return '''#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo VUFRONT-GUEST-BOOTED
%s
''' % loads


def wait_for_block(dev):
    """Shell lines that wait up to 30 s for block device `dev`."""
    return '''n=0
while [ ! -b %(dev)s ]; do
  n=$((n + 1))
  if [ $n -gt 300 ]; then echo "VUFRONT-GUEST-FAIL no %(dev)s"; poweroff -f; fi
  sleep 0.1
done
''' % {'dev': dev}


def cpio_newc(entries):
    """An uncompressed newc cpio archive of entries (name, mode, data, rdev)."""
    out = bytearray()

    def pad():
        out.extend(b'\0' * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries + [('TRAILER!!!', 0, b'', (0, 0))], 1):
        encoded = name.encode() + b'\0'
        fields = [ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(encoded), 0]
        out.extend(b'070701' + b''.join(b'%08x' % v for v in fields))
        out.extend(encoded)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def build_initramfs(path, version, busybox, wanted_modules, init_body, files=()):
    """Writes the initramfs to `path`: busybox, the modules `wanted_modules`
    need (dependencies first), an /init of init_preamble() + `init_body`, and
    `files` ((name, bytes) at the root). Returns the module names in load order."""
    modules = module_load_order(version, wanted_modules)
    names = [m for m, _ in modules]
    with open(busybox, 'rb') as f:
        bb = f.read()
    d, reg, chr_ = 0o040755, 0o100755, 0o020600
    entries = [(n, d, b'', (0, 0)) for n in ('bin', 'dev', 'proc', 'sys', 'lib', 'lib/modules', 'mnt')]
    entries += [('dev/console', chr_, b'', (5, 1)), ('bin/busybox', reg, bb, (0, 0)),
                ('init', reg, (init_preamble(names) + init_body).encode(), (0, 0))]
    entries += [('lib/modules/%s.ko' % m, 0o100644, module_bytes(p), (0, 0)) for m, p in modules]
    entries += [(name, 0o100644, data, (0, 0)) for name, data in files]
    with open(path, 'wb') as f:
        f.write(cpio_newc(entries))
    return names


# ---- QEMU -------------------------------------------------------------------------

class Qemu:
    """qemu-system-x86_64 booting `kernel` + `initrd` with `extra` arguments
    (the vhost-user devices), guest RAM a shared memfd, the serial console on
    stdout (kept line by line: wait_console()), QMP on `qmp` when given.
    Stopped by pid: use it as a context manager, or call stop() in a finally."""

    def __init__(self, qemu, kernel, initrd, extra, mem_mb=256, smp=1, qmp=None, reboot=False,
                 wrapper=()):
        args = [qemu, '-accel', 'tcg', '-m', str(mem_mb), '-smp', str(smp), '-nographic',
                '-nodefaults', '-serial', 'stdio', '-kernel', kernel, '-initrd', initrd,
                '-append', 'console=ttyS0 panic=-1 quiet',
                '-object', 'memory-backend-memfd,id=mem,size=%dM,share=on' % mem_mb,
                '-numa', 'node,memdev=mem']
        if not reboot:
            args.append('-no-reboot')
        if qmp:
            args += ['-qmp', 'unix:%s,server=on,wait=off' % qmp]
        self.qmp_path = qmp
        # the command line (the demo prints it); `wrapper` goes before it (strace)
        self.args = list(wrapper) + args + list(extra)
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.console = []
        self.stderr = []
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._drain, args=(s, l), daemon=True)
                         for s, l in ((self.proc.stdout, self.console), (self.proc.stderr, self.stderr))]
        for t in self._threads:
            t.start()

    def _drain(self, stream, lines):
        for raw in stream:
            with self._changed:
                lines.append(raw.decode(errors='replace'))
                self._changed.notify_all()
        with self._changed:
            lines.append('')  # end marker
            self._changed.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    def console_text(self):
        return ''.join(self.console)

    def stderr_text(self):
        return ''.join(self.stderr)

    def wait_console(self, text, timeout):
        """True once a console line contains `text`; False when QEMU closed
        its console first or `timeout` seconds passed."""
        with self._changed:
            self._changed.wait_for(lambda: any(text in l for l in self.console) or
                                   (self.console and self.console[-1] == ''), timeout)
            return any(text in l for l in self.console)

    def wait_exit(self, timeout):
        """Its exit status, or None while it still runs after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def qmp(self, command, arguments=None):
        """Runs one QMP command (with `arguments`, a dict) and returns its
        'return' (or raises)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.qmp_path)
        f = s.makefile('rwb')

        def read():
            while True:
                m = json.loads(f.readline())
                if 'event' not in m:
                    return m

        read()  # greeting
        run = {'execute': command}
        if arguments is not None:
            run['arguments'] = arguments
        for cmd in ({'execute': 'qmp_capabilities'}, run):
            f.write(json.dumps(cmd).encode() + b'\n')
            f.flush()
            r = read()
            if 'error' in r:
                raise AssertionError('QMP %s: %s' % (cmd['execute'], r['error']))
        s.close()
        return r.get('return')

    def kill(self):
        """SIGKILL now (a VMM that dies without a word)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace=5):
        """SIGTERM, SIGKILL after `grace` seconds; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
        for t in self._threads:
            t.join(5)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def memfd_fds(pid):
    """How many of process `pid`'s fds are memfds (guest RAM is one)."""
    n = 0
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            if os.readlink('/proc/%d/fd/%s' % (pid, fd)).startswith('/memfd:'):
                n += 1
        except OSError:
            pass
    return n


def memfd_maps(pid):
    """How many of process `pid`'s mappings are of memfds."""
    with open('/proc/%d/maps' % pid) as f:
        return sum(1 for line in f if '/memfd:' in line)


def wait_until(predicate, timeout, what, interval=0.01):
    """Polls `predicate` (`interval` seconds apart) until it is true; fails
    naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for ' + what)
        time.sleep(interval)
