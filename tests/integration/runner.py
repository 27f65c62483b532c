"""The small test runner the Python integration tests share.

Each `test_*` function of a module gets a fresh temporary directory, every
failure is printed with its traceback and the run goes on, and the closing
line is `N passed, N failed` (read by CI).
"""
import shutil
import tempfile
import traceback


def run_tests(namespace, only=None, prefix='vufront-it-'):
    """Runs the test_* callables of `namespace` (a module's globals()) whose
    name contains `only`; returns the process exit status."""
    tests = [(n, f) for n, f in sorted(namespace.items()) if n.startswith('test_') and callable(f)]
    if only:
        tests = [(n, f) for n, f in tests if only in n]
    passed = failed = 0
    for name, fn in tests:
        tmp = tempfile.mkdtemp(prefix=prefix)
        try:
            fn(tmp)
            passed += 1
            print('PASS', name, flush=True)
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print('FAIL', name, flush=True)
            traceback.print_exc()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or not passed else 0
