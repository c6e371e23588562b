"""Import modules in a fresh interpreter as on a machine without TensorFlow and seqio (the
GPU benchmark machines). `import tasks` registers the seqio tasks when seqio is installed, so
such a machine is simulated: both packages are made unfindable before anything is imported."""
import subprocess
import sys

_CODE = """
import importlib.util, sys
BLOCKED = ('tensorflow', 'seqio')
real = importlib.util.find_spec
importlib.util.find_spec = lambda n, p=None: (None if n.split('.')[0] in BLOCKED
                                              else real(n, p))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import {modules}
assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules
print('ok')
"""


def imports_without_tensorflow(*modules: str) -> bool:
    """True when `modules` import (and pull in neither TensorFlow nor seqio) without them."""
    out = subprocess.run([sys.executable, "-c", _CODE.format(modules=", ".join(modules))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip() == "ok"
