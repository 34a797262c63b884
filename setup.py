from setuptools import find_packages, setup

setup(
    name="r2d2-usb",
    version="0.1.0",
    description="R2-D2 (Repetitive Reprediction Deep Decipher, AAAI 2020) as a plugin for USB (semilearn)",
    packages=find_packages(include=["r2d2_plugin", "r2d2_plugin.*"]),
    python_requires=">=3.9",
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
)
