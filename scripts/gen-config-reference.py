#!/usr/bin/env python3
"""Regenerates the configuration reference in README.md from the binaries'
--help (between the config-reference markers), so the README cannot drift
from the code; tests/tests/docs_and_assets.rs checks the result.

Usage: cargo build --bins && python3 scripts/gen-config-reference.py
"""
import re
import os
import pathlib
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def options(binary):
    out = subprocess.run([str(pathlib.Path(os.environ.get("CARGO_TARGET_DIR", root / "target")) / "debug" / binary), "--help"], capture_output=True, text=True, check=True).stdout
    text = out.split("Options:", 1)[1]
    rows = []
    for block in re.split(r"\n(?=\s{2,6}(?:-\w, )?--)", text):
        block = block.strip()
        m = re.match(r"(?:-\w, )?(--[\w-]+)(?: <(\w+)>)?", block)
        if not m or m.group(1) in ("--help", "--version"):
            continue
        flag, value = m.group(1), m.group(2) or ""
        desc_lines = [l.strip() for l in block.splitlines()[1:] if l.strip()]
        env = ""
        desc = []
        for l in desc_lines:
            e = re.match(r"\[env: (\w+)=", l)
            if e:
                env = e.group(1)
            else:
                desc.append(l)
        d = " ".join(desc).replace("|", "\\|")
        # list flags are singular on the command line, plural in YAML
        plural = {"--log-path": "log_paths", "--log-exclude": "log_excludes", "--container-socket": "container_sockets", "--external-label": "external_labels"}
        key = plural.get(flag, flag[2:].replace("-", "_")) if flag != "--config" else "—"
        rows.append((flag + (f" {value}" if value else ""), env, key, d))
    return rows


def table(binary):
    lines = [f"#### `{binary}`", "", "| flag | environment | YAML key | meaning |", "|---|---|---|---|"]
    for flag, env, key, desc in options(binary):
        lines.append(f"| `{flag}` | `{env}` | `{key}` | {desc} |")
    return "\n".join(lines)


def main():
    readme = root / "README.md"
    text = readme.read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    if start not in text or end not in text:
        sys.exit("README.md lacks the config-reference markers")
    body = "\n\n".join(table(b) for b in ("vigil-agent", "vigil-collector"))
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}")


main()
