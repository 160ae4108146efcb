#!/usr/bin/env python3
"""React 18 for the React bindings' browser tests, without npm: PyPI's dash wheel carries React's
UMD builds. Puts react.js and react-dom.js in .build-web/ (once)."""
import glob
import re
import subprocess
import sys
import zipfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]
target = root / ".build-web"
if (target / "react.js").exists() and (target / "react-dom.js").exists():
    sys.exit(0)
wheels = target / "wheel"
wheels.mkdir(parents=True, exist_ok=True)
subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                "dash", "-d", str(wheels)], check=True)
wheel = sorted(glob.glob(str(wheels / "dash-*.whl")))[-1]
with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    for module in ("react", "react-dom"):
        # The newest React 18 development build in the wheel (development builds name their errors).
        pattern = re.compile(rf"dash/deps/{module}@(18\.\d+\.\d+)\.js$")
        found = sorted(((tuple(int(p) for p in m.group(1).split(".")), name) for name in names if (m := pattern.match(name))))
        if not found:
            sys.exit(f"no React 18 build of {module} in {wheel}")
        (target / f"{module}.js").write_bytes(archive.read(found[-1][1]))
print(f"React {'.'.join(map(str, found[-1][0]))} from {Path(wheel).name}")
