"""Lints charts/upgrade-guard and renders it with real Helm, once per values
file in charts/test-values/, into tests/fixtures/chart/<case>.yaml.

Helm here is Helm's own Go library (template engine, values coalescing,
values.schema.json validation, lint) loaded from the helm-python-sdk wheel;
charts/render.sh sets up its venv. Renders are release "upgrade-guard" in
namespace "upgrade-guard", CRDs included (as `helm template --include-crds`),
NOTES.txt left out, one document per object under a `# Source:` line.

A values file whose first lines hold `# refused: TEXT` must be refused: Helm
must fail on it with TEXT in its message (for the schema, the field's path,
as in `at '/replicas'`). Its message is written to <case>.refused.txt.
"""

import pathlib
import re
import shutil
import sys

import helm_python as helm

CHARTS = pathlib.Path(__file__).resolve().parent
CHART = CHARTS / "upgrade-guard"
CASES = CHARTS / "test-values"
OUT = CHARTS.parent / "tests" / "fixtures" / "chart"
RELEASE = "upgrade-guard"
NAMESPACE = "upgrade-guard"
REFUSED = re.compile(r"^# refused: (.+)$", re.MULTILINE)
# Helm's own separator rule (releaseutil.SplitManifests): `---` on its own line.
SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
# Lint messages: 1 info, 2 warning, 3 error. Warnings fail too (`helm lint --strict`).
WARNING = 2


def documents(text):
    """The non-empty YAML documents of a rendered template."""
    for doc in SEPARATOR.split(text):
        lines = [line for line in doc.strip("\n").splitlines()]
        if any(line.strip() and not line.lstrip().startswith("#") for line in lines):
            yield "\n".join(lines).strip("\n")


def render(chart, values):
    parts = []
    for crd in sorted(chart.crds, key=lambda c: c["filename"]):
        for doc in documents(crd["data"]):
            parts.append(f"---\n# Source: {crd['filename']}\n{doc}\n")
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in documents(rendered[path]):
            parts.append(f"---\n# Source: {path}\n{doc}\n")
    return "".join(parts)


def lint(values, case):
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    bad = [m for m in report["messages"] if m["severity"] >= WARNING]
    for m in bad:
        print(f"{case}: lint: {m['path']}: {m['error']}", file=sys.stderr)
    return not bad


def main():
    version = f"Helm {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})"
    cases = sorted(CASES.glob("*.yaml"))
    if not cases:
        sys.exit(f"no values files in {CASES}")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    failed = 0
    with helm.Chart.load(CHART) as chart:
        for path in cases:
            case = path.stem
            text = path.read_text()
            values = helm.values_from_yaml(text)
            header = (
                f"# Made by charts/render.sh with {version}: charts/upgrade-guard\n"
                f"# with charts/test-values/{path.name}, release {RELEASE} in namespace\n"
                f"# {NAMESPACE}. Do not edit: run charts/render.sh.\n"
            )
            expected = REFUSED.search(text)
            if expected:
                want = expected.group(1).strip()
                try:
                    render(chart, values)
                except helm.HelmError as e:
                    message = str(e).strip()
                    if want not in message:
                        print(f"{case}: refused, but not for `{want}`:\n{message}", file=sys.stderr)
                        failed += 1
                        continue
                    (OUT / f"{case}.refused.txt").write_text(header + message + "\n")
                    print(f"{case}: refused as expected ({want})")
                else:
                    print(f"{case}: accepted, but must be refused for `{want}`", file=sys.stderr)
                    failed += 1
                continue
            if not lint(values, case):
                failed += 1
                continue
            try:
                manifests = render(chart, values)
            except helm.HelmError as e:
                print(f"{case}: {e}", file=sys.stderr)
                failed += 1
                continue
            (OUT / f"{case}.yaml").write_text(header + manifests)
            print(f"{case}: {manifests.count('# Source: ')} objects")
    if failed:
        sys.exit(f"{failed} of {len(cases)} cases failed")


if __name__ == "__main__":
    main()
