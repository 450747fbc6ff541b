"""The README and --help tell the truth about the binary."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("TG_BINARY", os.path.join(REPO, "tenantguard"))


def readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_readme_starts_with_the_two_setup_commands():
    head = "\n".join(readme().splitlines()[:8])
    assert "scripts/demo" in head and "scripts/test" in head


def test_readme_config_table_matches_the_binary():
    keys = subprocess.run([BINARY, "config-keys"], capture_output=True, text=True, check=True).stdout
    text = readme()
    for line in keys.splitlines()[2:]:
        assert line in text, f"README's config table lacks or differs from: {line}"


def test_help_lists_every_command_and_they_answer_help():
    out = subprocess.run([BINARY, "--help"], capture_output=True, text=True, check=True).stdout
    cmds = [l.split()[0] for l in out.split("Commands:")[1].split("\n\n")[0].strip().splitlines()]
    assert "check-config" in cmds
    for c in cmds:
        r = subprocess.run([BINARY, c, "--help"], capture_output=True, text=True)
        assert r.returncode == 0, f"{c} --help exited {r.returncode}: {r.stderr}"
        assert "Usage" in r.stdout or "usage" in r.stdout, f"{c} --help says no usage"
