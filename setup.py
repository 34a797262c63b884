import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("r2d2_plugin/__init__.py").read_text()).group(1)

setup(
    name="r2d2-usb",
    version=VERSION,
    description="R2-D2 (Repetitive Reprediction Deep Decipher, AAAI 2020) as a plugin for USB (semilearn)",
    license="MIT",
    packages=find_packages(include=["r2d2_plugin", "r2d2_plugin.*"]),
    # The experiment tools run suites in spawned pools with max_tasks_per_child (Python 3.11).
    python_requires=">=3.11",
    install_requires=[
        # USB's PyPI name is `semilearn`; 0.3.2 is its last release that installs.
        # (`usb-semilearn` is not on the registry.)
        "semilearn==0.3.2",
        # ruamel.yaml 0.19 breaks USB's YAML loader.
        "ruamel.yaml<0.18",
        "torch",
        "torchvision",
        "wandb",
        "pyyaml",
        "scipy",
        "scikit-learn",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["r2d2-train = r2d2_plugin.cli.train:main",
                                      "r2d2-bench = r2d2_plugin.tools.bench:main"]},
)
