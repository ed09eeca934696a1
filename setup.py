"""Packaging for llmstart, driven by settings.ini (the nbdev 2 template, without `pkg_resources`)."""

import shlex
from configparser import ConfigParser

import setuptools

config = ConfigParser(delimiters=["="])
config.read("settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

cfg_keys = "version description keywords author author_email".split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected:
    assert o in cfg, f"missing expected setting: {o}"
setup_cfg = {o: cfg[o] for o in cfg_keys}

licenses = {"apache2": "Apache-2.0", "mit": "MIT"}  # SPDX expressions (license classifiers are deprecated)
statuses = [
    "1 - Planning",
    "2 - Pre-Alpha",
    "3 - Alpha",
    "4 - Beta",
    "5 - Production/Stable",
    "6 - Mature",
    "7 - Inactive",
]
py_versions = "3.10 3.11 3.12 3.13".split()


def reqs(key):
    "Requirements listed under `key` in settings.ini (shell-style split, so extras in brackets survive)."
    return shlex.split(cfg.get(key, "").strip())


requirements = reqs("requirements")
notebook_requirements = reqs("notebook_requirements")
dev_requirements = reqs("dev_requirements")
min_python = cfg["min_python"]
lic = licenses.get(cfg["license"].lower(), cfg["license"])

setuptools.setup(
    name=cfg["lib_name"],
    license=lic,
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"])],
        "Intended Audience :: " + cfg["audience"].title(),
        "Natural Language :: " + cfg["language"].title(),
    ]
    + ["Programming Language :: Python :: " + o for o in py_versions[py_versions.index(min_python) :]],
    url=cfg["git_url"],
    packages=setuptools.find_namespace_packages(include=["llmstart", "llmstart.*"]),  # samples/ holds data only
    include_package_data=True,
    package_data={"llmstart": ["samples/*", "configs/*.yaml"]},
    install_requires=requirements,
    extras_require={"notebooks": notebook_requirements, "dev": dev_requirements},
    dependency_links=cfg.get("dep_links", "").split(),
    python_requires=">=" + cfg["min_python"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    zip_safe=False,
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        "nbdev": [f"{cfg.get('lib_path')}={cfg.get('lib_path')}._modidx:d"],
    },
    **setup_cfg,
)
